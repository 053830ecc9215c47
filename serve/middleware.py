"""Request metrics and the body-size limit, as pure ASGI middleware (no response buffering, streaming-safe)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from serve.errors import error_response
from serve.metrics import ServeMetrics

API_PATHS = frozenset({"/v1/answer", "/v1/chat/completions", "/v1/models"})


class ObservabilityMiddleware:
    """Body-size limit, in-flight gauge, requests by route template and status, and latency per route."""

    def __init__(self, app: Any, metrics: ServeMetrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

    async def _too_large(self, scope: dict[str, Any], receive: Callable, send: Callable) -> bool:
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is None or not length.isdigit() or int(length) <= self.max_body_bytes:
            return False
        response = error_response(413, f"request body is {int(length)} bytes; the limit is {self.max_body_bytes}",
                                  "invalid_request_error", code="body_too_large")
        await response(scope, receive, send)
        # Label by endpoint only for known ones: raw paths would let clients create unbounded series.
        self.metrics.requests.labels(scope["path"] if scope["path"] in API_PATHS else "unmatched", "413").inc()
        return True

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if await self._too_large(scope, receive, send):
            return
        started = time.perf_counter()
        status = {"code": 500}
        is_api = scope["path"].startswith("/v1/")
        if is_api:
            self.metrics.in_flight.inc()

        async def send_with_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            path = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(path, str(status["code"])).inc()
            self.metrics.request_latency.labels(path).observe(time.perf_counter() - started)
            if is_api:
                self.metrics.in_flight.dec()
