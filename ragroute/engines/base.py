"""One interface for every generation backend, and the registry that names them.

An engine turns a batch of requests (chat messages or a raw prompt) into results with text, token counts,
finish reason and timings. Backends register under a short name (``vllm``, ``openai``, ``transformers``) and
are imported only when asked for, so choosing an engine never drags in the others' heavy dependencies.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from ragroute.errors import UserError

Message = dict[str, str]


@dataclass
class SamplingConfig:
    """Decoding settings shared by all engines."""

    max_tokens: int = field(default=256, metadata={"help": "most tokens to generate per answer"})
    min_tokens: int = field(
        default=0, metadata={"help": "generate at least this many tokens (EOS ignored until then; benchmarks)"}
    )
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy; the seed uses 0.1"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    stop: list[str] = field(default_factory=list, metadata={"help": "strings that end generation (not returned)"})
    repetition_penalty: float = field(
        default=1.0, metadata={"help": "> 1 discourages repeating tokens (small models loop without it)"}
    )
    seed: int | None = field(default=0, metadata={"help": "sampling seed for reproducible answers"})
    logprobs: int | None = field(
        default=None, metadata={"help": "also return the top-k log-probabilities of every generated token"}
    )
    allowed_token_ids: list[int] | None = field(
        default=None, metadata={"help": "generate only these token ids (a constrained choice, e.g. the verdict)"}
    )
    logprob_token_ids: list[int] | None = field(
        default=None,
        metadata={"help": "return the log-probabilities (full-vocabulary softmax, before any constraint) of exactly "
                  "these token ids at every step"},
    )

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, not {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {self.temperature}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, not {self.repetition_penalty}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")


@dataclass
class GenerationRequest:
    """Either chat ``messages`` (the chat template is applied by the engine) or a ready ``prompt`` string.

    Chat messages that end with an ``assistant`` message are a prefix of the answer: the engine continues that
    message instead of opening a new turn (how a verdict-first answer goes on after its verdict).
    """

    messages: list[Message] | None = None
    prompt: str | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a GenerationRequest needs exactly one of messages or prompt")

    @property
    def continues_answer(self) -> bool:
        """True when the last chat message is a partial assistant answer to be continued."""
        return bool(self.messages) and self.messages[-1].get("role") == "assistant"


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    total_s: float
    ttft_s: float | None = None  # time to first token, where the engine reports it
    token_ids: list[int] = field(default_factory=list)
    # One {token_id: logprob} dict per generated token (top-k), when SamplingConfig.logprobs was set.
    logprobs: list[dict[int, float]] | None = None
    # Random weights of a real shape (ModelSpec.load_format dummy): timing is real, the text is empty.
    shape_only: bool = False


@dataclass
class EngineConfig:
    """Which backend runs a model, and its knobs. Keys a backend does not use are ignored by it."""

    name: str = field(default="vllm", metadata={"help": "engine: vllm, openai or transformers"})
    # vLLM
    tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM: GPUs one model is split across"})
    data_parallel_size: int = field(default=1, metadata={"help": "vLLM: model replicas (one per GPU group)"})
    quantization: str | None = field(default=None, metadata={"help": "vLLM: fp8, awq, gptq or none"})
    gpu_memory_utilization: float = field(default=0.85, metadata={"help": "vLLM: share of GPU memory to use"})
    kv_cache_memory_gb: float | None = field(
        default=None, metadata={"help": "vLLM: KV-cache size in GiB (default: 1 GiB on CPU, derived on GPU)"}
    )
    enable_prefix_caching: bool = field(default=True, metadata={"help": "vLLM: reuse KV of shared prompt prefixes"})
    enforce_eager: bool | None = field(
        default=None, metadata={"help": "vLLM: skip graph compilation (default: on for CPU, off for GPU)"}
    )
    speculative_model: str | None = field(default=None, metadata={"help": "vLLM: draft model for speculative decoding"})
    speculative_method: str | None = field(
        default=None,
        metadata={"help": "vLLM: ngram (draft tokens looked up in the prompt, no draft model) or draft_model "
                  "(speculative_model; the default when that is set)"},
    )
    num_speculative_tokens: int = field(default=5, metadata={"help": "vLLM: tokens the draft proposes per step"})
    max_num_seqs: int | None = field(default=None, metadata={"help": "vLLM: most sequences batched at once"})
    # OpenAI-compatible HTTP
    base_url: str | None = field(default=None, metadata={"help": "openai: server URL, e.g. http://127.0.0.1:8000/v1"})
    api_key: str | None = field(default=None, metadata={"help": "openai: API key (default: env OPENAI_API_KEY or 'EMPTY')"})
    served_model_name: str | None = field(default=None, metadata={"help": "openai: model name the server expects"})
    timeout_s: float = field(default=120.0, metadata={"help": "openai: per-request timeout in seconds"})
    max_retries: int = field(default=3, metadata={"help": "openai: retries with exponential backoff"})
    concurrency: int = field(default=8, metadata={"help": "openai: requests in flight per batch"})
    # transformers
    batch_size: int = field(default=8, metadata={"help": "transformers: prompts per generate() call"})
    device: str = field(default="auto", metadata={"help": "transformers: cpu, cuda or auto"})

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise ValueError(f"unknown engine '{self.name}' (known: {', '.join(sorted(ENGINES))})")
        if self.speculative_method not in (None, "ngram", "draft_model"):
            raise ValueError(f"speculative_method must be ngram or draft_model, not '{self.speculative_method}'")
        if self.speculative_method == "draft_model" and not self.speculative_model:
            raise ValueError("speculative_method draft_model needs speculative_model (the draft's path)")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], not {self.gpu_memory_utilization}")


class GenerationEngine(ABC):
    """A loaded model that answers requests. Subclasses implement :meth:`generate`."""

    model_name: str

    @abstractmethod
    def generate(self, requests: list[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        """Answer every request, in order. Engines batch internally where they can."""

    def close(self) -> None:  # noqa: B027 - optional hook, most engines have nothing to release
        """Release the model (processes, memory)."""

    def __enter__(self) -> GenerationEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# name -> "module:Class"; imported lazily by create_engine.
ENGINES: dict[str, str] = {
    "vllm": "ragroute.engines.vllm_engine:VLLMEngine",
    "openai": "ragroute.engines.openai_engine:OpenAIEngine",
    "transformers": "ragroute.engines.hf_engine:TransformersEngine",
}


def import_target(target: str) -> Any:
    """The object a lazy registry entry ``"module:Name"`` names, imported on first use."""
    module_name, attribute = target.split(":")
    return getattr(importlib.import_module(module_name), attribute)


def register_engine(name: str, target: str) -> None:
    """Make a third-party engine available by name (``target`` is ``"module:Class"``)."""
    ENGINES[name] = target


def create_engine(model: Any, engine: EngineConfig) -> GenerationEngine:
    """Instantiate the engine named in ``engine`` for the :class:`ragroute.models.ModelSpec` ``model``."""
    try:
        target = ENGINES[engine.name]
    except KeyError:
        raise UserError(f"unknown engine '{engine.name}' (known: {', '.join(sorted(ENGINES))})") from None
    if getattr(model, "shape_only", False) and engine.name != "vllm":
        raise UserError(f"model '{model.name}' is shape-only (random weights): it runs on the vllm engine only")
    return import_target(target)(model, engine)
