"""What a run did, measured: per-step wall time, throughput, peak memory, losses -> ``train_report.json``."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (device work included), for steady-state throughput."""

    def __init__(self) -> None:
        self.step_s: list[float] = []
        self._started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        _sync()
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        self.step_s.append(time.perf_counter() - self._started)


def peak_memory() -> tuple[float, str]:
    """Peak GPU memory allocated by torch, or the process's peak resident memory on CPU, in GB."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "cpu_peak_rss"


def loss_history(log_history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]


def build_report(
    trainer: Any, train_result: Any, eval_metrics: dict[str, float], timer: StepTimer, wall_s: float, extra: dict
) -> dict[str, Any]:
    history = loss_history(trainer.state.log_history)
    runtime = float(train_result.metrics.get("train_runtime", 0.0)) or wall_s
    tokens = int(getattr(trainer, "_total_train_tokens", 0))
    steady = sorted(timer.step_s[1:]) or sorted(timer.step_s)
    median_step = steady[len(steady) // 2] if steady else None
    memory_gb, memory_kind = peak_memory()
    return {
        "steps": int(trainer.state.global_step),
        "first_loss": history[0][1] if history else None,
        "final_loss": history[-1][1] if history else None,
        "eval_loss": eval_metrics.get("eval_loss"),
        "tokens_per_s": tokens / runtime if runtime > 0 else None,
        "peak_memory_gb": round(memory_gb, 3),
        "peak_memory_kind": memory_kind,
        "wall_s": round(wall_s, 2),
        "train_runtime_s": round(runtime, 2),
        "train_tokens": tokens,
        "median_step_s": median_step,
        "step_s": [round(s, 4) for s in timer.step_s],
        "loss_history": history,
        "eval_metrics": eval_metrics,
        **extra,
    }


def write_report(output_dir: str | Path, report: dict[str, Any]) -> Path:
    path = Path(output_dir) / "train_report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(path)
    return path
