"""Whole answers: one model's complete answer within its ``timeout_s``, through fallback."""

from __future__ import annotations

import time
from typing import Any

from ragroute.engines.base import Message, SamplingConfig
from serve.service.fallback import Fallback
from serve.service.outcomes import EmptyAnswer, Outcome, within


class WholeAnswers:
    def __init__(self, fallback: Fallback) -> None:
        self.fallback = fallback
        self.models = fallback.models

    async def complete(self, role: str, messages: list[Message], sampling: SamplingConfig, allowed: bool = True,
                       after: Any = None) -> Outcome:
        """The whole answer from ``role``, or from the teacher when the student fails and fallback applies.
        ``after``: ``role``'s verdict step already taken (the cascade's), continued rather than taken again."""

        async def attempt(who: str, reject_blank: bool) -> Outcome:
            return await self._once(who, messages, sampling, reject_blank, after if who == role else None)

        outcome = await self.fallback.run(role, allowed, attempt)
        self.models.recorder.success(outcome.answered_by, outcome.prompt_tokens, outcome.completion_tokens,
                                     outcome.generation_s)
        return outcome

    async def _once(self, role: str, messages: list[Message], sampling: SamplingConfig, reject_blank: bool,
                    after: Any) -> Outcome:
        engine = self.models.engines[role]
        started = time.perf_counter()
        completion = await within(engine.complete(messages, sampling, after), self.models.timeout_s(role))
        if reject_blank and not completion.text.strip():
            raise EmptyAnswer(f"{engine.model_name} returned a blank answer ({completion.finish_reason})")
        if completion.ttft_s is not None:
            self.models.recorder.first_token(role, completion.ttft_s)
        return Outcome(
            text=completion.text, finish_reason=completion.finish_reason, prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens, answered_by=role, model=engine.model_name,
            fallback=None, generation_s=time.perf_counter() - started, verdict=completion.verdict,
            verdict_probs=completion.verdict_probs,
        )
