"""evaluation: compare teacher-only, student-only and routed systems on quality and latency; the demo."""
