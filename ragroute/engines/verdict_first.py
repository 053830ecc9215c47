"""Verdict-first answers in the engine layer, for both faces (:mod:`ragroute.verdict` is the pure part).

When ``SamplingConfig.verdict.enabled``, :meth:`GenerationEngine.generate` (batch) and
:meth:`StreamingEngine.stream` (async) answer in two steps on the same engine:

1. the verdict step: one token constrained to the verdict spellings (``allowed_token_ids``) with their
   full-softmax log-probabilities (``logprob_token_ids``) -> :class:`VerdictStep` (the verdict after the
   configured offsets, the raw P(yes/no/maybe));
2. the explanation: the chat continued after the assistant prefix ``"Yes."``.

Both faces build the same prompts and join the text the same way, so a greedy answer is the same text from
either. The streaming face never sends anything before the verdict step is done, and holds the prefix back until
the explanation's first text (a blank answer is still caught by serve's fallback). The cascade takes the student's
verdict step alone (:meth:`StreamingEngine.verdict`), decides, and either continues it (``stream(..., after=step)``)
or lets the teacher answer from scratch; the student's step is never streamed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from ragroute.engines.base import (
    Chunk,
    GenerationRequest,
    GenerationResult,
    Message,
    SamplingConfig,
    join_stream,
)
from ragroute.errors import UserError
from ragroute.verdict import VerdictConfig, choose, prefix_text, probabilities, verdict_token_ids

PREFIX_TOKENS = 2  # the verdict word and its full stop


@dataclass
class VerdictStep:
    """The first step of one answer: the verdict written (after the offsets), the model's raw P(yes/no/maybe),
    and what the step cost."""

    verdict: str
    probs: dict[str, float]
    seconds: float
    prompt_tokens: int


def verdict_ids(engine: Any) -> dict[str, list[int]]:
    """The engine's verdict token ids (from its tokenizer), computed once."""
    ids = getattr(engine, "_verdict_ids", None)
    if ids is None:
        ids = engine._verdict_ids = verdict_token_ids(engine.verdict_tokenizer())
    return ids


def step_sampling(sampling: SamplingConfig, ids: dict[str, list[int]]) -> SamplingConfig:
    """One greedy token among the verdict spellings, with their log-probabilities."""
    every = [t for tokens in ids.values() for t in tokens]
    return replace(sampling, max_tokens=1, min_tokens=0, temperature=0.0, stop=[], logprobs=None,
                   allowed_token_ids=every, logprob_token_ids=every, verdict=VerdictConfig())


def explain_sampling(sampling: SamplingConfig) -> SamplingConfig:
    """The explanation's sampling: at least ``min_explanation_tokens`` (small models otherwise stop at "Yes.")."""
    floor = min(max(sampling.min_tokens, sampling.verdict.min_explanation_tokens), sampling.max_tokens)
    return replace(sampling, min_tokens=floor, verdict=VerdictConfig())


def continued(messages: list[Message], verdict: str) -> list[Message]:
    """The chat with the answer opened by the verdict (the engine continues that assistant message)."""
    return [*messages, {"role": "assistant", "content": prefix_text(verdict)}]


def separator(text: str) -> str:
    """What joins the prefix and the explanation: a space unless the explanation starts with whitespace."""
    return "" if not text or text[0].isspace() else " "


def make_step(result: GenerationResult, ids: dict[str, list[int]], cfg: VerdictConfig, engine_name: str,
              seconds: float | None = None) -> VerdictStep:
    every = {t for tokens in ids.values() for t in tokens}
    if not result.logprobs or not set(result.logprobs[0]) & every:
        raise UserError(
            f"{engine_name} returned no log-probabilities for the verdict tokens: its model or server cannot "
            "constrain the answer (allowed_token_ids / logprob_token_ids are vLLM features); use vLLM or "
            "transformers, or set sampling.verdict.enabled: false"
        )
    probs = probabilities(result.logprobs[0], ids)
    return VerdictStep(choose(probs, cfg.bias), probs, result.total_s if seconds is None else seconds,
                       result.prompt_tokens)


def join_answer(step: VerdictStep, explanation: GenerationResult) -> GenerationResult:
    """One answer from the verdict step and the explanation that continued it."""
    prefix, text = prefix_text(step.verdict), explanation.text
    return GenerationResult(
        text=prefix + separator(text) + text,
        prompt_tokens=step.prompt_tokens,
        completion_tokens=PREFIX_TOKENS + explanation.completion_tokens,
        finish_reason=explanation.finish_reason,
        total_s=step.seconds + explanation.total_s,
        ttft_s=step.seconds,
        token_ids=explanation.token_ids,
        shape_only=explanation.shape_only,
        verdict=step.verdict,
        verdict_probs=step.probs,
        timings={"verdict": step.seconds, "explanation": explanation.total_s},
    )


def _check(requests: list[GenerationRequest], sampling: SamplingConfig) -> None:
    if sampling.logprobs is not None:
        raise UserError("top-k logprobs (offline KD) are not stored for verdict-first answers; use online KD or "
                        "set sampling.verdict.enabled: false")
    if any(r.messages is None for r in requests):
        raise UserError("verdict-first answers need chat messages, not raw prompts")


def generate_verdict_first(engine: Any, requests: list[GenerationRequest],
                           sampling: SamplingConfig) -> list[GenerationResult]:
    """The batch face: every verdict step in one batch, then every explanation in one batch."""
    _check(requests, sampling)
    if not requests:
        return []
    ids = verdict_ids(engine)
    steps = [make_step(r, ids, sampling.verdict, engine.model_name)
             for r in engine._generate(requests, step_sampling(sampling, ids))]
    follow = [GenerationRequest(messages=continued(r.messages, s.verdict)) for r, s in zip(requests, steps, strict=True)]
    explanations = engine._generate(follow, explain_sampling(sampling))
    return [join_answer(s, e) for s, e in zip(steps, explanations, strict=True)]


async def verdict_step_async(engine: Any, messages: list[Message], sampling: SamplingConfig) -> VerdictStep:
    """The streaming face's verdict step (prefill + one constrained token)."""
    _check([GenerationRequest(messages=messages)], sampling)
    ids = verdict_ids(engine)
    started = time.perf_counter()
    result = await join_stream(engine._stream(messages, step_sampling(sampling, ids)))
    return make_step(result, ids, sampling.verdict, engine.model_name, time.perf_counter() - started)


async def stream_verdict_first(engine: Any, messages: list[Message], sampling: SamplingConfig,
                               after: VerdictStep | None = None) -> AsyncIterator[Chunk]:
    """The streaming face: the verdict step (or ``after``, one already taken), then the explanation streamed
    behind the verdict prefix. The last chunk carries the verdict and its probabilities."""
    step = after or await verdict_step_async(engine, messages, sampling)
    pending: str | None = prefix_text(step.verdict)
    async with aclosing(engine._stream(continued(messages, step.verdict), explain_sampling(sampling))) as chunks:
        async for chunk in chunks:
            text = chunk.text
            if pending is not None and (text or chunk.finish_reason):
                text, pending = pending + separator(text) + text, None
            if chunk.finish_reason:
                yield Chunk(text, finish_reason=chunk.finish_reason, prompt_tokens=step.prompt_tokens,
                            completion_tokens=PREFIX_TOKENS + (chunk.completion_tokens or 0),
                            verdict=step.verdict, verdict_probs=step.probs)
                return
            if text:
                yield Chunk(text)
