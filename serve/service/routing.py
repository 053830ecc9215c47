"""Routing: which model answers a question, by the router (on the question and its retrieval signals), by the
client's forced choice, or, in cascade mode, by the cascade rule on the student's verdict step."""

from __future__ import annotations

import time
from typing import Any

from ragroute.engines.base import Message, SamplingConfig
from ragroute.routing import RouteDecision, RoutingPolicy, retrieval_signals
from serve.api_error import APIError
from serve.config import RoutingConfig
from serve.service.fallback import Fallback
from serve.service.outcomes import ROLES, CascadeStep, within


class Routing:
    """The router policy and the cascade rule (``cascade``: a :class:`ragroute.cascade.CascadeRule` or None),
    set when the service starts."""

    def __init__(self, cfg: RoutingConfig, fallback: Fallback) -> None:
        self.cfg = cfg
        self.fallback = fallback
        self.models = fallback.models
        self.policy: RoutingPolicy | None = None
        self.cascade: Any = None

    def decide(self, question: str, forced: str | None, doc_scores: list[float] | None = None) -> RouteDecision:
        if forced in ROLES:
            decision = RoutingPolicy.forced(forced)
        else:
            assert self.policy is not None
            signals = None
            if doc_scores is not None and self.cfg.use_retrieval_signals and self.policy.uses_signals:
                signals = retrieval_signals(doc_scores)
            decision = self.policy.decide(question, signals)
        self.models.recorder.routed(decision)
        return decision

    async def cascade_step(self, messages: list[Message], sampling: SamplingConfig,
                           allowed: bool = True) -> CascadeStep:
        """Cascade mode: the student's verdict step, nothing of it sent anywhere, and the rule's decision on it
        (:meth:`ragroute.cascade.CascadeRule.decide`). A student that cannot take the step (error, timeout, open
        circuit) escalates as a fallback where fallback applies."""
        assert self.cascade is not None
        started, fallback = time.perf_counter(), None

        async def verdict(who: str, _: bool) -> Any:
            return await within(self.models.engines[who].verdict(messages, sampling), self.models.timeout_s(who))

        try:
            step = await self.models.attempt("student", verdict, False)
            decision = self.cascade.decide(step.probs)
        except APIError:
            raise
        except Exception as exc:
            fallback = self.fallback.take_over("student", exc, allowed, "failed its verdict step", keep_down=False)
            step, decision = None, RouteDecision(True, None, self.cascade.threshold, "cascade")
        waste_s = time.perf_counter() - started
        self.models.recorder.cascade(decision, waste_s)
        self.models.recorder.routed(decision)
        return CascadeStep(decision, step, waste_s, fallback)
