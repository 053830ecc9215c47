"""Fallback: a student that raises, exceeds its ``timeout_s``, answers only whitespace or has its circuit open is
replaced by the teacher (each switch counted and reported in the response), for whole answers, stream openings
and the cascade's verdict step alike. Client errors (:class:`~serve.api_error.APIError`) never fall back."""

from __future__ import annotations

import asyncio
from typing import Any

from ragroute.engines.base import Message
from serve.api_error import APIError
from serve.config import FallbackConfig
from serve.limits import fit_to_context
from serve.service.models import Attempt, ModelPool
from serve.service.outcomes import ROLES, FallbackInfo, GenerationFailed, ModelDown, describe


class Fallback:
    """The fallback rules (``cfg.fallback``) over the two models."""

    def __init__(self, cfg: FallbackConfig, models: ModelPool) -> None:
        self.cfg = cfg
        self.models = models

    def applies(self, role: str, reason: str, allowed: bool) -> bool:
        """Whether the teacher steps in when ``role`` fails for ``reason`` (error, timeout, empty)."""
        return role == "student" and allowed and self.cfg.enabled and bool(getattr(self.cfg, f"on_{reason}"))

    def take_over(self, role: str, exc: BaseException, allowed: bool, what: str = "failed",
                  keep_down: bool = True) -> FallbackInfo:
        """The teacher takes over from a failed ``role``: the fallback to report, or, when no fallback applies,
        :class:`GenerationFailed` raised from ``exc`` (an open circuit re-raised as it is when ``keep_down``).
        Counted either way."""
        reason = "circuit_open" if isinstance(exc, ModelDown) else self.models.recorder.failure(role, exc)
        if not self.applies(role, "error" if reason == "circuit_open" else reason, allowed):
            if isinstance(exc, ModelDown) and keep_down:
                raise exc
            raise GenerationFailed(f"{role} ({self.models.name(role)}) {what}: {describe(exc)}",
                                   timed_out=reason == "timeout") from exc
        self.models.recorder.fallback(reason)
        return FallbackInfo(from_model=role, reason=reason, detail=describe(exc))

    async def run(self, role: str, allowed: bool, attempt: Attempt) -> Any:
        """``attempt`` on ``role``; if the student fails and fallback applies, the teacher's attempt, marked with
        the reason. A blank answer is a failure only where the teacher can still step in."""
        try:
            return await self.models.attempt(role, attempt, role == "student")
        except (APIError, asyncio.CancelledError):
            raise
        except Exception as exc:
            fallback = self.take_over(role, exc, allowed)
        try:
            result = await self.models.attempt("teacher", attempt, False)
        except (APIError, ModelDown):
            raise
        except Exception as teacher_exc:
            teacher_reason = self.models.recorder.failure("teacher", teacher_exc)
            raise GenerationFailed(
                f"student {fallback.reason} ({fallback.detail}), then teacher {teacher_reason} "
                f"({describe(teacher_exc)})", timed_out=teacher_reason == "timeout",
            ) from teacher_exc
        result.fallback = fallback
        return result

    async def fit_prompt(self, role: str, messages: list[Message], max_tokens: int, explicit: bool,
                         allowed: bool = True) -> int:
        """``max_tokens`` checked against the context of every model that may answer (``role``, and the teacher
        if the student may fall back): the prompt counted in each model's tokens. An unrequested default shrinks
        to what the prompt leaves. Models that cannot count locally (upstreams) check on their own."""
        roles = [role] if role == "teacher" or not self.applies(role, "error", allowed) else list(ROLES)
        for who in roles:
            engine = self.models.engines[who]
            context = engine.context_length
            if context is None:
                continue
            prompt_tokens = await asyncio.to_thread(engine.count_prompt_tokens, messages)
            max_tokens = fit_to_context(prompt_tokens, max_tokens, context, engine.model_name, explicit)
        return max_tokens
