"""Async generation backends for serving: one small interface, three implementations, a registry.

A backend streams the answer to a list of chat messages as :class:`Chunk` s. Non-streaming callers use
:meth:`ServingBackend.complete`, which joins the stream. Timeouts and fallback live in :mod:`serve.service`,
so every backend gets the same behaviour.

* ``vllm``: an in-process ``vllm.v1.engine.async_llm.AsyncLLM`` (continuous batching across requests).
* ``transformers``: a ``transformers`` model in this process; generation runs in one worker thread per model
  (requests queue for it), tokens stream back through ``AsyncTextIteratorStreamer``.
* ``openai``: an upstream OpenAI-compatible server (``vllm serve``, SGLang, TGI, ...) over ``httpx``.
  This keeps the router process stateless: each model scales on its own servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragroute.engines.base import Message, SamplingConfig, import_target
from serve.config import BACKEND_KINDS, BackendConfig


class BackendError(RuntimeError):
    """The model could not produce an answer (engine failure, upstream HTTP error, dropped connection)."""


@dataclass
class Chunk:
    """A piece of streamed answer text. The last chunk carries the finish reason and the token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    total_s: float
    ttft_s: float | None


class ServingBackend(ABC):
    """One model that answers chat messages asynchronously."""

    model_name: str

    async def start(self) -> None:  # noqa: B027 - optional: load weights, open connections
        """Load the model / open connections. Called once before the first request."""

    @abstractmethod
    def stream(self, messages: list[Message], sampling: SamplingConfig) -> AsyncIterator[Chunk]:
        """Yield the answer as it is generated; raise :class:`BackendError` when the model fails."""

    async def complete(self, messages: list[Message], sampling: SamplingConfig) -> Completion:
        started = time.perf_counter()
        ttft = None
        parts: list[str] = []
        last = Chunk("")
        async for chunk in self.stream(messages, sampling):
            if chunk.text and ttft is None:
                ttft = time.perf_counter() - started
            parts.append(chunk.text)
            last = chunk
        return Completion(
            text="".join(parts),
            finish_reason=last.finish_reason or "stop",
            prompt_tokens=last.prompt_tokens or 0,
            completion_tokens=last.completion_tokens or 0,
            total_s=time.perf_counter() - started,
            ttft_s=ttft,
        )

    async def first_token_logprobs(self, messages: list[Message], token_ids: list[int]) -> dict[int, float]:
        """Log-probabilities (full softmax) of ``token_ids`` as the answer's first token: the cascade's verdict step."""
        raise BackendError(f"{self.model_name}: this backend cannot score verdict tokens (the cascade needs the "
                           "vllm or transformers backend)")

    async def close(self) -> None:  # noqa: B027 - optional
        """Release the model or the connections."""


def template_options(messages: list[Message]) -> dict[str, bool]:
    """Chat-template options: open the assistant's turn, or continue a final assistant message (a verdict prefix)."""
    if messages and messages[-1].get("role") == "assistant":
        return {"add_generation_prompt": False, "continue_final_message": True}
    return {"add_generation_prompt": True}


def model_spec_for(cfg: BackendConfig):
    """A :class:`ragroute.models.ModelSpec` for ``cfg.model``: a model config name/YAML, or a plain model path."""
    from ragroute.config import CONFIG_ROOT
    from ragroute.models import ModelSpec, load_model_spec

    ref = cfg.model
    if ref.endswith((".yaml", ".yml")) or (CONFIG_ROOT / "models" / f"{ref}.yaml").exists():
        spec = load_model_spec(ref)
    else:
        default_name = ref.split(":", 1)[1] if ref.startswith("ragroute:") else Path(ref.rstrip("/")).name
        spec = ModelSpec(name=default_name, path=ref, dtype=cfg.dtype, max_model_len=cfg.max_model_len)
    if cfg.name:
        spec.name = cfg.name
    return spec


# ------------------------------------------------------------------------------------------------ transformers


class TransformersBackend(ServingBackend):
    """A transformers model run by one worker thread; requests wait their turn for it."""

    def __init__(self, cfg: BackendConfig) -> None:
        self.cfg = cfg
        self.spec = model_spec_for(cfg)
        self.model_name = self.spec.name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hf-{self.model_name}")
        self.model: Any = None
        self.tokenizer: Any = None

    def _load(self) -> None:
        from ragroute.models import load_causal_lm, load_tokenizer

        device = self.cfg.device
        if device == "auto":
            from ragroute.hardware import has_cuda

            device = "cuda" if has_cuda() else "cpu"
        self.tokenizer = load_tokenizer(self.spec.tokenizer or self.spec.path)
        model = load_causal_lm(self.spec.path, dtype=self.spec.dtype)
        self.model = model.to(device).eval()

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _generate(self, messages: list[Message], sampling: SamplingConfig, streamer: Any, cancel: threading.Event):
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class Cancelled(StoppingCriteria):
            # Lets a timed-out or disconnected request stop the worker instead of finishing a dead answer.
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return cancel.is_set()

        try:
            inputs = self.tokenizer.apply_chat_template(
                messages, return_tensors="pt", return_dict=True, **template_options(messages)
            ).to(self.model.device)
            kwargs: dict[str, Any] = {
                "max_new_tokens": sampling.max_tokens,
                "streamer": streamer,
                "stopping_criteria": StoppingCriteriaList([Cancelled()]),
                "pad_token_id": self.tokenizer.pad_token_id,
            }
            if sampling.temperature > 0:
                kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if sampling.stop:
                kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
            with torch.inference_mode():
                output = self.model.generate(**inputs, **kwargs)
            prompt_tokens = int(inputs["input_ids"].shape[1])
            new_tokens = output[0, prompt_tokens:]
            eos = self.model.generation_config.eos_token_id
            eos_ids = set(eos if isinstance(eos, list) else [eos])
            completion = [int(t) for t in new_tokens if int(t) not in eos_ids and int(t) != self.tokenizer.pad_token_id]
            hit_eos = any(int(t) in eos_ids for t in new_tokens)
            finish = "length" if len(new_tokens) >= sampling.max_tokens and not hit_eos else "stop"
            return prompt_tokens, len(completion), finish
        except BaseException:
            streamer.on_finalized_text("", stream_end=True)  # unblock the reader; the future carries the error
            raise

    def _first_token_logprobs(self, messages: list[Message], token_ids: list[int]) -> dict[int, float]:
        import torch

        inputs = self.tokenizer.apply_chat_template(
            messages, return_tensors="pt", return_dict=True, **template_options(messages)
        ).to(self.model.device)
        with torch.inference_mode():
            logits = self.model(**inputs).logits[0, -1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        return {int(t): float(logprobs[t]) for t in token_ids}

    async def first_token_logprobs(self, messages: list[Message], token_ids: list[int]) -> dict[int, float]:
        if self.model is None:
            raise BackendError(f"{self.model_name}: model not loaded")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._first_token_logprobs, messages, token_ids
        )

    async def stream(self, messages: list[Message], sampling: SamplingConfig) -> AsyncIterator[Chunk]:
        from transformers import AsyncTextIteratorStreamer

        if self.model is None:
            raise BackendError(f"{self.model_name}: model not loaded")
        streamer = AsyncTextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, self._generate, messages, sampling, streamer, cancel
        )
        try:
            async for text in streamer:
                if text:
                    yield Chunk(text)
            try:
                prompt_tokens, completion_tokens, finish = await future
            except Exception as exc:
                raise BackendError(f"{self.model_name}: generation failed: {type(exc).__name__}: {exc}") from exc
            yield Chunk("", finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        finally:
            cancel.set()

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.model = None


# ------------------------------------------------------------------------------------------------ vLLM


SHAPE_ONLY_TOKEN = "\u25af"  # ▯


class VLLMBackend(ServingBackend):
    """An in-process vLLM ``AsyncLLM``: concurrent requests share continuous batches."""

    def __init__(self, cfg: BackendConfig) -> None:
        self.cfg = cfg
        self.spec = model_spec_for(cfg)
        self.model_name = self.spec.name
        self.engine: Any = None
        self.tokenizer: Any = None

    def _engine_kwargs(self) -> dict[str, Any]:
        from ragroute.engines.base import EngineConfig
        from ragroute.engines.vllm_engine import vllm_engine_kwargs

        engine = EngineConfig(
            name="vllm",
            tensor_parallel_size=self.cfg.tensor_parallel_size,
            quantization=self.cfg.quantization,
            gpu_memory_utilization=self.cfg.gpu_memory_utilization,
            kv_cache_memory_gb=self.cfg.kv_cache_memory_gb,
            max_num_seqs=self.cfg.max_num_seqs,
            enforce_eager=self.cfg.enforce_eager,
        )
        kwargs = vllm_engine_kwargs(self.spec, engine)
        kwargs["disable_log_stats"] = True  # serve exports its own metrics; vLLM's periodic log is noise here
        return kwargs

    def _load(self) -> None:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # see ragroute.engines.vllm_engine
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from ragroute.models import hub_error

        try:
            self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self._engine_kwargs()))
        except OSError as exc:
            raise hub_error(self.spec.path, exc) from None
        self.tokenizer = self.engine.get_tokenizer()

    async def start(self) -> None:
        # Building the engine blocks for the weights load and engine-process handshake: keep the loop free so
        # /health answers meanwhile. AsyncLLM starts its output loop lazily on the first request.
        await asyncio.to_thread(self._load)

    async def stream(self, messages: list[Message], sampling: SamplingConfig) -> AsyncIterator[Chunk]:
        from vllm.sampling_params import RequestOutputKind

        from ragroute.engines.vllm_engine import to_sampling_params

        if self.engine is None:
            raise BackendError(f"{self.model_name}: engine not loaded")
        params = to_sampling_params(sampling, self.spec.shape_only)
        params.output_kind = RequestOutputKind.DELTA
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, **template_options(messages))
        # Token ids, not text: the chat template already holds any BOS, and vLLM would add another to text.
        prompt_ids = self.tokenizer.encode(text, add_special_tokens=False)
        completion_tokens = 0
        try:
            async for output in self.engine.generate(
                {"prompt_token_ids": prompt_ids}, params, request_id=uuid.uuid4().hex
            ):
                piece = output.outputs[0]
                completion_tokens += len(piece.token_ids)
                # A shape-only model (random weights) has no text: one placeholder per token keeps the stream a
                # stream (time to first token, chunk pacing) and can never pass for an answer.
                text = SHAPE_ONLY_TOKEN * len(piece.token_ids) if self.spec.shape_only else piece.text
                if output.finished:
                    yield Chunk(
                        text,
                        finish_reason="length" if piece.finish_reason == "length" else "stop",
                        prompt_tokens=len(prompt_ids),
                        completion_tokens=completion_tokens,
                    )
                elif text:
                    yield Chunk(text)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise BackendError(f"{self.model_name}: vLLM failed: {type(exc).__name__}: {exc}") from exc

    async def first_token_logprobs(self, messages: list[Message], token_ids: list[int]) -> dict[int, float]:
        from ragroute.engines.base import SamplingConfig
        from ragroute.engines.vllm_engine import to_sampling_params

        if self.engine is None:
            raise BackendError(f"{self.model_name}: engine not loaded")
        params = to_sampling_params(SamplingConfig(max_tokens=1, allowed_token_ids=token_ids, logprob_token_ids=token_ids))
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, **template_options(messages))
        prompt_ids = self.tokenizer.encode(text, add_special_tokens=False)
        try:
            async for output in self.engine.generate({"prompt_token_ids": prompt_ids}, params, request_id=uuid.uuid4().hex):
                if output.finished:
                    step = output.outputs[0].logprobs[0]
                    return {int(t): float(lp.logprob) for t, lp in step.items()}
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise BackendError(f"{self.model_name}: vLLM failed: {type(exc).__name__}: {exc}") from exc
        raise BackendError(f"{self.model_name}: vLLM returned no verdict step")

    async def close(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None


# ------------------------------------------------------------------------------------------------ upstream


class OpenAIUpstreamBackend(ServingBackend):
    """A model behind an OpenAI-compatible HTTP server, spoken to with ``httpx``.

    Not ``openai.AsyncOpenAI``: on the relay's hot path it builds pydantic objects for every streamed event
    (~0.35 ms each, measured with cProfile), which made the serving overhead ~10 ms per answer. Events that
    arrive in one network read are relayed as one chunk, so a fast upstream costs one send, not one per token.
    """

    def __init__(self, cfg: BackendConfig) -> None:
        self.cfg = cfg
        self.model_name = cfg.name or cfg.served_model_name or cfg.model or cfg.base_url or "upstream"
        self._served: str | None = cfg.served_model_name
        self.client: Any = None

    async def start(self) -> None:
        import httpx

        api_key = os.environ.get(self.cfg.api_key_env, "") if self.cfg.api_key_env else ""
        limits = httpx.Limits(max_connections=self.cfg.max_connections,
                              max_keepalive_connections=self.cfg.max_connections)
        self.client = httpx.AsyncClient(
            base_url=str(self.cfg.base_url).rstrip("/") + "/",
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            # Read timeout = longest silence between bytes; serve bounds the whole answer with timeout_s.
            timeout=httpx.Timeout(self.cfg.timeout_s, connect=self.cfg.connect_timeout_s),
            transport=httpx.AsyncHTTPTransport(limits=limits, retries=self.cfg.max_retries),
        )

    async def _served_model(self) -> str:
        if self._served is None:
            # Like clients of `vllm serve` do: the upstream's first (usually only) model.
            response = await self.client.get("models")
            response.raise_for_status()
            models = response.json().get("data") or []
            if not models:
                raise BackendError(f"{self.cfg.base_url} serves no models")
            self._served = str(models[0]["id"])
        return self._served

    async def stream(self, messages: list[Message], sampling: SamplingConfig) -> AsyncIterator[Chunk]:
        import httpx

        if self.client is None:
            raise BackendError(f"{self.model_name}: not started")
        try:
            body: dict[str, Any] = {
                "model": await self._served_model(), "messages": messages, "max_tokens": sampling.max_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed,
                "stream": True, "stream_options": {"include_usage": True},
            }
            if sampling.stop:
                body["stop"] = list(sampling.stop)
            async with self.client.stream("POST", "chat/completions", json=body) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode(errors="replace")[:500]
                    raise BackendError(f"{self.model_name}: upstream returned HTTP {response.status_code}: {detail}")
                events = SSEDecoder()
                finish: str | None = None
                usage: dict[str, Any] = {}
                async for data in response.aiter_bytes():
                    texts = []
                    for event in events.feed(data):
                        if "error" in event:
                            raise BackendError(f"{self.model_name}: upstream error: {event['error']}")
                        usage = event.get("usage") or usage
                        for choice in event.get("choices") or ():
                            finish = choice.get("finish_reason") or finish
                            texts.append((choice.get("delta") or {}).get("content") or "")
                    if any(texts):
                        yield Chunk("".join(texts))
                # (No break at [DONE]: reading the body to its end keeps the connection reusable.)
            if finish is None:
                raise BackendError(f"{self.model_name}: upstream stream ended without a finish reason")
            yield Chunk("", finish_reason="length" if finish == "length" else "stop",
                        prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"))
        except httpx.TimeoutException as exc:
            raise TimeoutError(f"{self.model_name}: upstream timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise BackendError(f"{self.model_name}: upstream failed: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # a malformed event (bad JSON) from the upstream
            raise BackendError(f"{self.model_name}: upstream sent a malformed event: {exc}") from exc

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None


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


# name -> "module:Class"; a third-party backend registers itself with register_backend.
BACKENDS: dict[str, str] = {
    "vllm": "serve.backends:VLLMBackend",
    "transformers": "serve.backends:TransformersBackend",
    "openai": "serve.backends:OpenAIUpstreamBackend",
}


def register_backend(name: str, target: str) -> None:
    """Make a third-party backend available as ``backend: NAME`` (``target`` is ``"module:Class"``)."""
    BACKENDS[name] = target
    if name not in BACKEND_KINDS:
        BACKEND_KINDS.append(name)


def create_backend(cfg: BackendConfig) -> ServingBackend:
    return import_target(BACKENDS[cfg.backend])(cfg)
