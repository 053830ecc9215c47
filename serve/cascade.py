"""Cascade answers on /v1/answer: the student's verdict step decides whether the student goes on.

1. The student scores the verdict tokens as its answer's first token (``first_token_logprobs``): P(yes/no/maybe).
2. The cascade rule (:mod:`ragroute.cascade`) turns them into a score; at or above its threshold the question is
   escalated. The verdict step is never shown to the client, so an escalation discards nothing it has seen;
   its time is the escalation's waste, reported per answer and in ``/metrics``.
3. The chosen model writes the answer verdict-first: its verdict, then the explanation continued after it. A kept
   student continues after its own calibrated verdict; the teacher runs its own verdict step first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from ragroute.engines.base import Message, SamplingConfig
from ragroute.verdict import choose, prefix_text, probabilities, verdict_token_ids

MIN_EXPLANATION_TOKENS = 16


@dataclass
class CascadeResult:
    outcome: Any  # serve.service.Outcome of the model that wrote the answer (text starts with the verdict)
    escalated: bool
    score: float
    threshold: float
    verdict: str
    student_probs: dict[str, float]
    waste_s: float  # the student's verdict step, thrown away when escalated


class Cascade:
    """The rule and the verdict token ids (from the student's tokenizer; both models share it in this project)."""

    def __init__(self, rule: Any, tokenizer: Any) -> None:
        self.rule = rule
        self.ids = verdict_token_ids(tokenizer)
        self.all_ids = [t for tokens in self.ids.values() for t in tokens]

    async def _verdict(self, service: Any, role: str, messages: list[Message]) -> dict[str, float]:
        from serve.service import within

        backend = service.backends[role]
        step = await within(backend.first_token_logprobs(messages, self.all_ids), service.backend_cfgs[role].timeout_s)
        return probabilities(step, self.ids)

    async def answer(
        self, service: Any, messages: list[Message], sampling: SamplingConfig, allow_fallback: bool
    ) -> CascadeResult:
        started = time.perf_counter()
        student_probs = await self._verdict(service, "student", messages)
        waste_s = time.perf_counter() - started
        escalated, score = self.rule.escalate(student_probs)
        service.metrics.cascade.labels("escalate" if escalated else "keep").inc()
        if escalated:
            service.metrics.escalation_waste.observe(waste_s)
            verdict = choose(await self._verdict(service, "teacher", messages), {})
        else:
            verdict = choose(student_probs, self.rule.student_bias)
        role = "teacher" if escalated else "student"
        prefix = prefix_text(verdict)
        floor = min(max(sampling.min_tokens, MIN_EXPLANATION_TOKENS), sampling.max_tokens)
        outcome = await service.complete(role, [*messages, {"role": "assistant", "content": prefix}],
                                         replace(sampling, min_tokens=floor), allow_fallback=allow_fallback)
        text = outcome.text
        outcome.text = prefix + ("" if not text or text[0].isspace() else " ") + text
        outcome.generation_s = time.perf_counter() - started
        return CascadeResult(outcome, escalated, score, self.rule.threshold, verdict, student_probs, waste_s)


def load_cascade_for(path: str, tokenizer_source: str) -> Cascade:
    from ragroute.cascade import load_cascade
    from ragroute.models import load_tokenizer

    return Cascade(load_cascade(path), load_tokenizer(tokenizer_source))
