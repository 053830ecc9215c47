"""Prometheus metrics of one server (prometheus-client), in a registry of its own.

A registry per app (not the process-global one) lets several servers live in one process (tests, the load
benchmark) without "duplicated timeseries" errors, and keeps vLLM's own global metrics separate.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Latency buckets from 1 ms (router overhead) to 2 min (a long teacher answer on CPU).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ragroute_requests", "HTTP requests by route and status code", ["route", "status"], registry=r
        )
        self.request_latency = Histogram(
            "ragroute_request_latency_seconds", "Whole-request latency by route", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.stage_latency = Histogram(
            "ragroute_stage_latency_seconds",
            "Latency per pipeline stage (retrieval, rerank, filter, prompt, route, generation)",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.time_to_first_token = Histogram(
            "ragroute_time_to_first_token_seconds", "Time to the first answer token by model role", ["model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.routed = Counter(
            "ragroute_routed", "Routing decisions by chosen model and decision source", ["model", "source"], registry=r
        )
        self.answered = Counter("ragroute_answered", "Answers by the model that produced them", ["model"], registry=r)
        self.fallbacks = Counter(
            "ragroute_fallbacks", "Student answers replaced by the teacher, by reason (circuit_open: sent straight "
            "to the teacher while the student is down)", ["reason"], registry=r
        )
        self.circuit_state = Gauge(
            "ragroute_circuit_state", "Circuit breaker per model role: 0 closed, 1 half-open (trial), 2 open (down)",
            ["model"], registry=r,
        )
        self.cancelled = Counter(
            "ragroute_cancelled", "Generations stopped before their end, by model role and reason: client_left, "
            "deadline (the request's), slow_reader (the client took none of its response for http.write_timeout_s), "
            "shutdown", ["model", "reason"], registry=r,
        )
        self.errors = Counter("ragroute_errors", "Failed generations by model role and kind", ["model", "kind"], registry=r)
        self.tokens = Counter("ragroute_tokens", "Tokens by model role and kind", ["model", "kind"], registry=r)
        self.cascade = Counter(
            "ragroute_cascade_decisions", "Cascade decisions after the student's verdict step", ["decision"], registry=r
        )
        self.escalation_waste = Histogram(
            "ragroute_escalation_waste_seconds", "Student verdict-step time thrown away by escalations", registry=r
        )
        self.in_flight = Gauge("ragroute_in_flight_requests", "Requests being served now (/v1 routes)", registry=r)
        self.queued = Gauge("ragroute_queued_requests", "Requests waiting for a generation slot", registry=r)
        self.rejected = Counter("ragroute_rejected", "Requests refused by the concurrency bound (429)", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# The request's ASGI ``scope["state"]``, set by the request guard for the request's tasks: the transport
# (serve.transport) writes why it cut a connection off there ("cut_off"), the routes the request's deadline
# ("deadline_at", monotonic seconds), so that a cancelled generation is counted with its reason.
REQUEST_STATE: ContextVar[dict[str, Any] | None] = ContextVar("ragroute_request_state", default=None)


def cancel_reason() -> str:
    """Why the current request's generation is being cancelled: the transport's reason, else ``deadline`` once
    the request's deadline has passed, else ``client_left``."""
    state = REQUEST_STATE.get() or {}
    if state.get("cut_off"):
        return state["cut_off"]
    deadline_at = state.get("deadline_at")
    return "deadline" if deadline_at is not None and time.monotonic() >= deadline_at else "client_left"


def set_request_deadline(deadline_at: float) -> None:
    """Record the current request's deadline (monotonic seconds) for :func:`cancel_reason`."""
    state = REQUEST_STATE.get()
    if state is not None:
        state["deadline_at"] = deadline_at
