"""HTTP client engine for any OpenAI-compatible server (``vllm serve``, ``python -m vllm.entrypoints...``).

Requests stream so that time to first token is measured on the client; the official ``openai`` client does
the timeouts and the retries with exponential backoff. A batch is sent with ``concurrency`` requests in flight,
which is how a vLLM server batches them on its side.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from ragroute.engines.base import (
    EngineConfig,
    GenerationEngine,
    GenerationRequest,
    GenerationResult,
    SamplingConfig,
)
from ragroute.errors import UserError
from ragroute.models import ModelSpec

# vLLM's extensions of the OpenAI API that a constrained (verdict-first) answer needs.
CONSTRAINT_KEYS = frozenset(
    {"allowed_token_ids", "logprob_token_ids", "return_tokens_as_token_ids", "continue_final_message"}
)


def constraint_extras(request: GenerationRequest, sampling: SamplingConfig) -> dict:
    """The ``extra_body`` entries for a constrained choice, token-id logprobs and a continued answer."""
    extra: dict = {}
    if sampling.allowed_token_ids:
        extra["allowed_token_ids"] = list(sampling.allowed_token_ids)
    if sampling.logprob_token_ids:
        extra.update(logprob_token_ids=list(sampling.logprob_token_ids), return_tokens_as_token_ids=True)
    if request.continues_answer:
        extra.update(continue_final_message=True, add_generation_prompt=False)
    return extra


def token_id_logprobs(logprobs) -> list[dict[int, float]]:  # noqa: ANN001 - openai's ChoiceLogprobs
    """``{token_id: logprob}`` per step from a response made with ``return_tokens_as_token_ids`` ("token_id:N")."""
    steps = []
    for item in (logprobs.content or []) if logprobs is not None else []:
        entry = {int(t.token.split(":", 1)[1]): float(t.logprob) for t in (item.top_logprobs or [])}
        entry.setdefault(int(item.token.split(":", 1)[1]), float(item.logprob))
        steps.append(entry)
    return steps


class OpenAIEngine(GenerationEngine):
    def __init__(self, model: ModelSpec, engine: EngineConfig) -> None:
        import openai

        if not engine.base_url:
            raise UserError("the openai engine needs engine.base_url, e.g. http://127.0.0.1:8000/v1")
        self.model_name = model.name
        self.served_model = engine.served_model_name or model.path
        self.concurrency = max(1, engine.concurrency)
        self.client = openai.OpenAI(
            base_url=engine.base_url,
            api_key=engine.api_key or os.environ.get("OPENAI_API_KEY", "EMPTY"),
            timeout=engine.timeout_s,
            max_retries=engine.max_retries,
        )

    def generate(self, requests: list[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        if len(requests) <= 1:
            return [self._one(r, sampling) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(lambda r: self._one(r, sampling), requests))

    def _one(self, request: GenerationRequest, sampling: SamplingConfig) -> GenerationResult:
        if sampling.logprobs is not None:
            # The OpenAI API returns logprobs keyed by token text, not id; offline KD needs ids.
            raise UserError("the openai engine does not return token-id logprobs; use the vllm engine for them")
        common = {
            "model": self.served_model,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if sampling.stop:
            common["stop"] = list(sampling.stop)
        # vLLM's extensions of the OpenAI API
        extra = {}
        if sampling.repetition_penalty != 1.0:
            extra["repetition_penalty"] = sampling.repetition_penalty
        if sampling.min_tokens:
            extra["min_tokens"] = sampling.min_tokens
        extra.update(constraint_extras(request, sampling))
        if sampling.logprob_token_ids:
            common["logprobs"] = True
        if extra:
            common["extra_body"] = extra
        if sampling.seed is not None:
            common["seed"] = sampling.seed
        started = time.perf_counter()
        first_token_at = None
        pieces: list[str] = []
        finish_reason = "stop"
        usage = None
        logprobs: list[dict[int, float]] | None = [] if sampling.logprob_token_ids else None
        stream = self._create(request, common)
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                piece = choice.delta.content if request.messages is not None else choice.text
                if piece:
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                    pieces.append(piece)
                if logprobs is not None:
                    logprobs.extend(token_id_logprobs(choice.logprobs))
                if choice.finish_reason:
                    finish_reason = "length" if choice.finish_reason == "length" else "stop"
        finished = time.perf_counter()
        return GenerationResult(
            text="".join(pieces),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=finish_reason,
            total_s=finished - started,
            ttft_s=None if first_token_at is None else first_token_at - started,
            logprobs=logprobs,
        )

    def _create(self, request: GenerationRequest, common: dict):
        """Open the stream; a server that rejects the constraint parameters is named in a clear UserError."""
        import openai

        try:
            if request.messages is not None:
                return self.client.chat.completions.create(messages=request.messages, **common)
            return self.client.completions.create(prompt=request.prompt, **common)
        except openai.BadRequestError as exc:
            if "extra_body" in common and set(common["extra_body"]) & CONSTRAINT_KEYS:
                raise UserError(
                    f"the server at {self.client.base_url} cannot constrain the answer "
                    f"({', '.join(sorted(set(common['extra_body']) & CONSTRAINT_KEYS))} rejected: {exc}); "
                    "verdict-first answers need a vLLM-compatible server, or set verdict.enabled: false"
                ) from None
            raise

    def close(self) -> None:
        self.client.close()
