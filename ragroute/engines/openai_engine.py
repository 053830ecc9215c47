"""Any OpenAI-compatible server (``vllm serve``, SGLang, TGI, ...): the batch face (the official ``openai``
client, ``concurrency`` requests in flight, which is how a vLLM server batches them on its side) and the
streaming face (``httpx``, relaying the upstream's event stream). Both send the same request body.

Requests stream so that time to first token is measured on the client. The batch face lets the ``openai``
client do the timeouts and retries with exponential backoff. The streaming face is not ``openai.AsyncOpenAI``:
on a relay's hot path it builds pydantic objects for every streamed event (~0.35 ms each, measured with
cProfile), which made serve's overhead ~10 ms per answer. Events that arrive in one network read are relayed as
one chunk, so a fast upstream costs one send, not one per token.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ragroute.engines.base import (
    Chunk,
    EngineConfig,
    EngineError,
    EngineRejected,
    GenerationEngine,
    GenerationRequest,
    GenerationResult,
    Message,
    SamplingConfig,
    StreamingEngine,
    continues_answer,
)
from ragroute.errors import UserError
from ragroute.models import ModelSpec

# vLLM's extensions of the OpenAI API (sent in the body; other servers ignore or reject them). The constraint keys
# make a constrained, continued (verdict-first) answer.
CONSTRAINT_KEYS = ("allowed_token_ids", "logprob_token_ids", "return_tokens_as_token_ids", "continue_final_message",
                   "add_generation_prompt")
VLLM_EXTRAS = ("repetition_penalty", "min_tokens", *CONSTRAINT_KEYS)


def request_body(sampling: SamplingConfig, messages: list[Message] | None = None) -> dict[str, Any]:
    """The sampling part of a streamed completion request: every :class:`SamplingConfig` option, and for chat
    ``messages`` ending with an assistant message, vLLM's ``continue_final_message``."""
    if sampling.logprobs is not None:
        # The OpenAI API returns logprobs keyed by token text, not id; offline KD needs ids.
        raise UserError("the openai engine does not return token-id logprobs; use the vllm engine for them")
    body: dict[str, Any] = {
        "max_tokens": sampling.max_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p,
        "stream": True, "stream_options": {"include_usage": True},
    }
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if sampling.repetition_penalty != 1.0:
        body["repetition_penalty"] = sampling.repetition_penalty
    if sampling.min_tokens:
        body["min_tokens"] = sampling.min_tokens
    if sampling.allowed_token_ids:
        body["allowed_token_ids"] = list(sampling.allowed_token_ids)
    if sampling.logprob_token_ids:
        body.update(logprobs=True, logprob_token_ids=list(sampling.logprob_token_ids), return_tokens_as_token_ids=True)
    if continues_answer(messages):
        body.update(continue_final_message=True, add_generation_prompt=False)
    return body


def rejected_constraint(body: dict[str, Any], server: Any, detail: Any) -> UserError | None:
    """A clear error when a server refused a request that asked for vLLM's constraint parameters."""
    asked = sorted(k for k in CONSTRAINT_KEYS if k in body)
    if not asked:
        return None
    return UserError(f"the server at {server} cannot constrain the answer ({', '.join(asked)} rejected: {detail}); "
                     "verdict-first answers need a vLLM-compatible server, or set sampling.verdict.enabled: false")


def token_id_logprobs(logprobs: dict[str, Any] | None) -> list[dict[int, float]]:
    """``{token_id: logprob}`` per step from a response made with ``return_tokens_as_token_ids`` ("token_id:N")."""
    steps = []
    for item in (logprobs or {}).get("content") or ():
        entry = {int(t["token"].split(":", 1)[1]): float(t["logprob"]) for t in item.get("top_logprobs") or ()}
        entry.setdefault(int(item["token"].split(":", 1)[1]), float(item["logprob"]))
        steps.append(entry)
    return steps


def finish_reason(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


class OpenAIEngine(GenerationEngine):
    """The batch face."""

    def __init__(self, model: ModelSpec, engine: EngineConfig) -> None:
        import openai

        if not engine.openai.base_url:
            raise UserError("the openai engine needs engine.openai.base_url, e.g. http://127.0.0.1:8000/v1")
        self.model_name = model.name
        self.spec = model
        self.served_model = engine.openai.served_model_name or model.path
        self.concurrency = max(1, engine.openai.concurrency)
        self.client = openai.OpenAI(
            base_url=engine.openai.base_url,
            api_key=engine.openai.resolved_api_key() or os.environ.get("OPENAI_API_KEY", "EMPTY"),
            timeout=engine.openai.timeout_s,
            max_retries=engine.openai.max_retries,
        )

    def _generate(self, requests: list[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        if len(requests) <= 1:
            return [self._one(r, sampling) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(lambda r: self._one(r, sampling), requests))

    def verdict_tokenizer(self) -> Any:
        from ragroute.models import load_tokenizer

        return load_tokenizer(self.spec.tokenizer or self.spec.path)

    def _one(self, request: GenerationRequest, sampling: SamplingConfig) -> GenerationResult:
        import openai

        body = request_body(sampling, request.messages)
        extra = {key: body.pop(key) for key in VLLM_EXTRAS if key in body}
        common = {"model": self.served_model, **body, **({"extra_body": extra} if extra else {})}
        started = time.perf_counter()
        first_token_at = None
        pieces: list[str] = []
        finish = "stop"
        usage = None
        logprobs: list[dict[int, float]] | None = [] if sampling.logprob_token_ids else None
        try:
            if request.messages is not None:
                stream = self.client.chat.completions.create(messages=request.messages, **common)
            else:
                stream = self.client.completions.create(prompt=request.prompt, **common)
        except openai.BadRequestError as exc:
            raise rejected_constraint(extra, self.client.base_url, exc) or exc from None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                piece = choice.delta.content if request.messages is not None else choice.text
                if piece:
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                    pieces.append(piece)
                if logprobs is not None and choice.logprobs is not None:
                    logprobs.extend(token_id_logprobs(choice.logprobs.model_dump()))
                if choice.finish_reason:
                    finish = finish_reason(choice.finish_reason)
        finished = time.perf_counter()
        return GenerationResult(
            text="".join(pieces),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=finish,
            total_s=finished - started,
            ttft_s=None if first_token_at is None else first_token_at - started,
            logprobs=logprobs,
        )

    def close(self) -> None:
        self.client.close()


class SSEDecoder:
    """Incremental server-sent-events decoder for the ``data: {json}`` events of OpenAI-style streams."""

    def __init__(self) -> None:
        self._buffer = b""
        self.done = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer = (self._buffer + data).replace(b"\r\n", b"\n")
        *complete, self._buffer = self._buffer.split(b"\n\n")
        events = []
        for block in complete:
            payload = b"\n".join(line[5:].lstrip() for line in block.split(b"\n") if line.startswith(b"data:"))
            if not payload:
                continue  # comments / keep-alives
            if payload == b"[DONE]":
                self.done = True
                break
            events.append(json.loads(payload))
        return events


class _Relay:
    """What a stream of upstream events said so far: the finish reason and the usage."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.events = SSEDecoder()
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.logprobs: list[dict[int, float]] = []

    def texts(self, data: bytes) -> str:
        texts = []
        for event in self.events.feed(data):
            if "error" in event:
                raise EngineError(f"{self.model_name}: upstream error: {event['error']}")
            self.usage = event.get("usage") or self.usage
            for choice in event.get("choices") or ():
                self.finish = choice.get("finish_reason") or self.finish
                self.logprobs.extend(token_id_logprobs(choice.get("logprobs")))
                texts.append((choice.get("delta") or {}).get("content") or "")
        return "".join(texts)

    def last(self) -> Chunk:
        if self.finish is None:
            raise EngineError(f"{self.model_name}: upstream stream ended without a finish reason")
        return Chunk("", finish_reason=finish_reason(self.finish), prompt_tokens=self.usage.get("prompt_tokens"),
                     completion_tokens=self.usage.get("completion_tokens"), logprobs=self.logprobs or None)


class AsyncOpenAIEngine(StreamingEngine):
    """The streaming face, over ``httpx``. Without ``served_model_name`` it asks the upstream for its first
    model, as clients of ``vllm serve`` do (a serving router names no model path of its own)."""

    def __init__(self, model: ModelSpec, engine: EngineConfig) -> None:
        if not engine.openai.base_url:
            raise UserError("the openai engine needs engine.openai.base_url, e.g. http://127.0.0.1:8000/v1")
        self.cfg = engine.openai
        self.spec = model
        self.model_name = model.name
        self._served: str | None = engine.openai.served_model_name
        self.client: Any = None

    async def start(self) -> None:
        import httpx

        api_key = self.cfg.resolved_api_key()
        limits = httpx.Limits(max_connections=self.cfg.concurrency, max_keepalive_connections=self.cfg.concurrency)
        self.client = httpx.AsyncClient(
            base_url=str(self.cfg.base_url).rstrip("/") + "/",
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            # Read timeout = longest silence between bytes; serve bounds the whole answer itself.
            timeout=httpx.Timeout(self.cfg.timeout_s, connect=self.cfg.connect_timeout_s),
            transport=httpx.AsyncHTTPTransport(limits=limits, retries=self.cfg.max_retries),
        )

    async def check_health(self) -> None:
        """The upstream lists its models (``GET /v1/models``: cheap on vLLM, SGLang, TGI)."""
        if self.client is None:
            raise EngineError(f"{self.model_name}: not started")
        response = await self.client.get("models")
        response.raise_for_status()

    async def _served_model(self) -> str:
        if self._served is None:
            response = await self.client.get("models")
            response.raise_for_status()
            models = response.json().get("data") or []
            if not models:
                raise EngineError(f"{self.cfg.base_url} serves no models")
            self._served = str(models[0]["id"])
        return self._served

    def verdict_tokenizer(self) -> Any:
        from ragroute.models import load_tokenizer

        return load_tokenizer(self.spec.tokenizer or self.spec.path)

    async def _stream(self, messages: list[Message], sampling: SamplingConfig) -> AsyncIterator[Chunk]:
        import httpx

        if self.client is None:
            raise EngineError(f"{self.model_name}: not started")
        try:
            body = {"model": await self._served_model(), "messages": messages, **request_body(sampling, messages)}
            relay = _Relay(self.model_name)
            async with self.client.stream("POST", "chat/completions", json=body) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode(errors="replace")[:500]
                    if response.status_code == 400:  # e.g. a prompt over the model's context
                        if unsupported := rejected_constraint(body, self.cfg.base_url, detail):
                            raise EngineError(str(unsupported))
                        raise EngineRejected(f"{self.model_name} rejected the request: {detail}")
                    raise EngineError(f"{self.model_name}: upstream returned HTTP {response.status_code}: {detail}")
                async for data in response.aiter_bytes():
                    if text := relay.texts(data):
                        yield Chunk(text)
                # (No break at [DONE]: reading the body to its end keeps the connection reusable.)
            yield relay.last()
        except httpx.TimeoutException as exc:
            raise TimeoutError(f"{self.model_name}: upstream timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise EngineError(f"{self.model_name}: upstream failed: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # a malformed event (bad JSON) from the upstream
            raise EngineError(f"{self.model_name}: upstream sent a malformed event: {exc}") from exc

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
