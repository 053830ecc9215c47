"""The service's metrics and log lines: every generation, failure, fallback, routing decision and cancellation is
counted here, so the other parts only say what happened."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ragroute.routing import RouteDecision
from serve.breaker import STATES
from serve.metrics import ServeMetrics, cancel_reason
from serve.service.outcomes import ROLES, describe, failure_reason

log = logging.getLogger("ragroute.serve")


class Recorder:
    """Records into :class:`ServeMetrics`; ``model_name(role)`` names a role's model in log lines."""

    def __init__(self, metrics: ServeMetrics, model_name: Callable[[str], str]) -> None:
        self.metrics = metrics
        self._model_name = model_name
        for role in ROLES:
            metrics.circuit_state.labels(role).set(0)

    def failure(self, role: str, exc: BaseException) -> str:
        """Count and log a failed generation; its reason (error, timeout, empty)."""
        reason = failure_reason(exc)
        self.metrics.errors.labels(role, reason).inc()
        log.warning("%s (%s) failed: %s: %s", role, self._model_name(role), reason, describe(exc))
        return reason

    def success(self, role: str, prompt_tokens: int, completion_tokens: int, seconds: float) -> None:
        self.metrics.answered.labels(role).inc()
        self.metrics.stage_latency.labels("generation").observe(seconds)
        self.metrics.tokens.labels(role, "prompt").inc(prompt_tokens)
        self.metrics.tokens.labels(role, "completion").inc(completion_tokens)

    def first_token(self, role: str, seconds: float) -> None:
        self.metrics.time_to_first_token.labels(role).observe(seconds)

    def cancelled(self, role: str) -> None:
        self.metrics.cancelled.labels(role, cancel_reason()).inc()

    def fallback(self, reason: str) -> None:
        self.metrics.fallbacks.labels(reason).inc()

    def routed(self, decision: RouteDecision) -> None:
        self.metrics.routed.labels(decision.role, decision.source).inc()

    def cascade(self, decision: RouteDecision, waste_s: float) -> None:
        self.metrics.cascade.labels("escalate" if decision.use_teacher else "keep").inc()
        if decision.use_teacher:
            self.metrics.escalation_waste.observe(waste_s)

    def stages(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            self.metrics.stage_latency.labels(stage).observe(seconds)

    def circuit(self, role: str, state: str) -> None:
        self.metrics.circuit_state.labels(role).set(STATES.index(state))
