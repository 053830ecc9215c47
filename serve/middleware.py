"""Request metrics as pure ASGI middleware (no response buffering, streaming-safe). It is the outermost layer,
so the refusals of the request guard (:mod:`serve.guard`: 401, 408, 413) are counted too."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from serve.metrics import ServeMetrics

API_PATHS = frozenset({"/v1/answer", "/v1/chat/completions", "/v1/models"})


class ObservabilityMiddleware:
    """In-flight gauge, requests by route template and status, and latency per route."""

    def __init__(self, app: Any, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
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
            # Label by endpoint only for known ones: raw paths would let clients create unbounded series.
            route = getattr(scope.get("route"), "path", None)
            path = route or (scope["path"] if scope["path"] in API_PATHS else "unmatched")
            self.metrics.requests.labels(path, str(status["code"])).inc()
            self.metrics.request_latency.labels(path).observe(time.perf_counter() - started)
            if is_api:
                self.metrics.in_flight.dec()
