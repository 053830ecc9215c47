"""The one engine layer: every generation backend, with a batch face and an async streaming face.

* Batch (:class:`GenerationEngine`, data_gen and eval): a batch of requests (chat messages or a raw prompt) in,
  results with text, token counts, finish reason and timings out.
* Streaming (:class:`StreamingEngine`, serve): one chat request at a time from many coroutines, the answer
  streamed as :class:`Chunk` s; the joined stream is the same :class:`GenerationResult`.

Both faces of one backend live in one module and share its settings, prompt building, sampling translation,
EOS and stop handling, so a greedy answer is the same text whichever face produced it. Backends register under
a short name (``vllm``, ``openai``, ``transformers``) and are imported only when asked for, so choosing an
engine never drags in the others' heavy dependencies.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from ragroute.errors import UserError
from ragroute.registry import Registry, UnknownName
from ragroute.verdict import VerdictConfig

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
    verdict: VerdictConfig = field(
        default_factory=VerdictConfig,
        metadata={"help": "verdict-first answers: an engine-enforced Yes/No/Maybe first, with its probabilities, "
                  "then the explanation (part of the system spec; off for free-text questions)"},
    )

    def __post_init__(self) -> None:
        if isinstance(self.verdict, dict):  # a recorded system (JSON) or a plain-dict override
            self.verdict = VerdictConfig(**self.verdict)
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
        return continues_answer(self.messages)


def continues_answer(messages: list[Message] | None) -> bool:
    """True when the last chat message is a partial assistant answer (a verdict prefix) to be continued."""
    return bool(messages) and messages[-1].get("role") == "assistant"


def template_options(messages: list[Message]) -> dict[str, bool]:
    """Chat-template options: open the assistant's turn, or continue a final assistant message."""
    if continues_answer(messages):
        return {"add_generation_prompt": False, "continue_final_message": True}
    return {"add_generation_prompt": True}


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
    # Verdict-first answers (SamplingConfig.verdict): the verdict the text opens with, P(yes/no/maybe), and the
    # seconds of each step ("verdict", "explanation").
    verdict: str | None = None
    verdict_probs: dict[str, float] | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class VLLMConfig:
    """vLLM's settings (``engine.vllm.*``)."""

    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs one model is split across"})
    data_parallel_size: int = field(default=1, metadata={"help": "model replicas (one per GPU group)"})
    devices: list[int] | None = field(
        default=None,
        metadata={"help": "the GPUs (indices among those this process sees) this engine runs on, "
                  "tensor_parallel_size x data_parallel_size of them; default: the first ones visible"},
    )
    quantization: str | None = field(default=None, metadata={"help": "fp8, awq, gptq or none"})
    gpu_memory_utilization: float = field(default=0.85, metadata={"help": "share of GPU memory to use"})
    kv_cache_memory_gb: float | None = field(
        default=None, metadata={"help": "KV-cache size in GiB (default: 1 GiB on CPU, derived on GPU)"}
    )
    enable_prefix_caching: bool = field(default=True, metadata={"help": "reuse KV of shared prompt prefixes"})
    enforce_eager: bool | None = field(
        default=None, metadata={"help": "skip graph compilation (default: on for CPU, off for GPU)"}
    )
    speculative_model: str | None = field(default=None, metadata={"help": "draft model for speculative decoding"})
    speculative_method: str | None = field(
        default=None,
        metadata={"help": "ngram (draft tokens looked up in the prompt, no draft model) or draft_model "
                  "(speculative_model; the default when that is set)"},
    )
    num_speculative_tokens: int = field(default=5, metadata={"help": "tokens the draft proposes per step"})
    max_num_seqs: int | None = field(default=None, metadata={"help": "most sequences batched at once"})
    mps_thread_percentage: int | None = field(
        default=None,
        metadata={"help": "vLLM under CUDA MPS: the share (1-100) of the GPU's SMs this engine's kernels may use "
                  "(CUDA_MPS_ACTIVE_THREAD_PERCENTAGE of its engine process); caps a student beside a teacher on "
                  "one card; no effect without an MPS daemon"},
    )

    def __post_init__(self) -> None:
        if self.speculative_method not in (None, "ngram", "draft_model"):
            raise ValueError(f"speculative_method must be ngram or draft_model, not '{self.speculative_method}'")
        if self.speculative_method == "draft_model" and not self.speculative_model:
            raise ValueError("speculative_method draft_model needs speculative_model (the draft's path)")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], not {self.gpu_memory_utilization}")
        if self.tensor_parallel_size < 1 or self.data_parallel_size < 1:
            raise ValueError("tensor_parallel_size and data_parallel_size must be >= 1")
        if self.devices is not None:
            check_devices(self.devices, self.tensor_parallel_size * self.data_parallel_size)
        if self.mps_thread_percentage is not None and not 1 <= self.mps_thread_percentage <= 100:
            raise ValueError(f"mps_thread_percentage must be in 1..100, not {self.mps_thread_percentage}")

    def gpu_ids(self) -> list[int]:
        """The GPUs (indices this process sees) vLLM runs this engine on: ``devices``, else the first
        tensor_parallel_size x data_parallel_size visible ones, as vLLM picks them."""
        return list(self.devices) if self.devices is not None else list(
            range(self.tensor_parallel_size * self.data_parallel_size))


@dataclass
class OpenAIConfig:
    """An OpenAI-compatible HTTP server's settings (``engine.openai.*``)."""

    base_url: str | None = field(default=None, metadata={"help": "server URL, e.g. http://127.0.0.1:8000/v1"})
    api_key: str | None = field(default=None, metadata={"help": "API key (default: env OPENAI_API_KEY or 'EMPTY')"})
    served_model_name: str | None = field(
        default=None,
        metadata={"help": "model name the server expects (default: batch face, the model path; "
                  "streaming face, the server's first model)"},
    )
    api_key_env: str | None = field(
        default=None, metadata={"help": "environment variable holding the API key (instead of api_key)"}
    )
    timeout_s: float = field(
        default=120.0, metadata={"help": "per-request timeout in seconds (streaming: longest silence)"}
    )
    connect_timeout_s: float = field(default=5.0, metadata={"help": "seconds to open a connection"})
    max_retries: int = field(default=3, metadata={"help": "retries with exponential backoff"})
    concurrency: int = field(
        default=8, metadata={"help": "requests in flight per batch (streaming: connection pool size)"}
    )

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("timeout_s and connect_timeout_s must be > 0")
        if self.max_retries < 0 or self.concurrency < 1:
            raise ValueError("max_retries must be >= 0 and concurrency >= 1")

    def resolved_api_key(self) -> str | None:
        """``api_key``, else the variable named by ``api_key_env``, else None."""
        import os

        return self.api_key or (os.environ.get(self.api_key_env) or None if self.api_key_env else None)


@dataclass
class TransformersConfig:
    """The in-process transformers backend's settings (``engine.transformers.*``)."""

    batch_size: int = field(default=8, metadata={"help": "prompts per generate() call"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto"})



# The flat keys of earlier releases, each now under its backend's section.
_FLAT_KEYS = {f.name: f"{section}.{f.name}" for section, cls in (("vllm", VLLMConfig), ("openai", OpenAIConfig),
              ("transformers", TransformersConfig)) for f in fields(cls)}


@dataclass
class EngineConfig:
    """Which backend runs a model (``name``) and each backend's settings in its own section; a backend reads only
    its own. The flat keys of earlier releases (``engine.gpu_memory_utilization``) still load, moved to their
    section with a warning (``engine.vllm.gpu_memory_utilization``)."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = _FLAT_KEYS

    name: str = field(default="vllm", metadata={"help": "engine: vllm, openai or transformers"})
    vllm: VLLMConfig = field(default_factory=VLLMConfig, metadata={"help": "vLLM settings"})
    openai: OpenAIConfig = field(default_factory=OpenAIConfig, metadata={"help": "OpenAI-compatible server settings"})
    transformers: TransformersConfig = field(default_factory=TransformersConfig,
                                             metadata={"help": "transformers settings"})

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise ValueError(f"unknown engine '{self.name}' (known: {', '.join(sorted(ENGINES))})")

    @classmethod
    def of(cls, name: str = "vllm", **settings: Any) -> EngineConfig:
        """An engine config from settings named as in Python code elsewhere (``EngineConfig.of("transformers",
        device="cpu")``), each put in its backend's section."""
        sections: dict[str, dict[str, Any]] = {"vllm": {}, "openai": {}, "transformers": {}}
        for key, value in settings.items():
            if key not in _FLAT_KEYS:
                raise TypeError(f"EngineConfig.of() got an unknown setting '{key}'")
            sections[_FLAT_KEYS[key].split(".")[0]][key] = value
        return cls(name=name, vllm=VLLMConfig(**sections["vllm"]), openai=OpenAIConfig(**sections["openai"]),
                   transformers=TransformersConfig(**sections["transformers"]))


def check_devices(devices: list[int], needed: int) -> None:
    """``engine.vllm.devices`` must name ``needed`` distinct GPU indices (>= 0)."""
    if not devices or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in devices):
        raise ValueError(f"devices must be a list of GPU indices >= 0 (e.g. [1]), not {devices}")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices names a GPU twice: {devices}")
    if len(devices) != needed:
        raise ValueError(f"devices names {len(devices)} GPU(s) but the engine uses tensor_parallel_size x "
                         f"data_parallel_size = {needed}: {devices}")


class GenerationEngine(ABC):
    """A loaded model that answers requests. Subclasses implement :meth:`_generate` (one generation step per
    request) and :meth:`verdict_tokenizer`."""

    model_name: str

    def generate(self, requests: list[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        """Answer every request, in order; verdict-first (two steps) when ``sampling.verdict.enabled``."""
        if sampling.verdict.enabled:
            from ragroute.engines.verdict_first import generate_verdict_first

            return generate_verdict_first(self, requests, sampling)
        return self._generate(requests, sampling)

    @abstractmethod
    def _generate(self, requests: list[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        """One generation per request, in order. Engines batch internally where they can."""

    def verdict_tokenizer(self) -> Any:
        """The model's tokenizer (it names the verdict tokens of verdict-first answers)."""
        raise UserError(f"the {type(self).__name__} cannot write verdict-first answers")

    def close(self) -> None:  # noqa: B027 - optional hook, most engines have nothing to release
        """Release the model (processes, memory)."""

    def __enter__(self) -> GenerationEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class EngineError(RuntimeError):
    """The model could not produce an answer (engine failure, upstream HTTP error, dropped connection)."""


@dataclass
class Chunk:
    """A piece of streamed answer text. The last chunk carries the finish reason and the token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # On the last chunk: {token_id: logprob} per generated token (SamplingConfig.logprob_token_ids), and for a
    # verdict-first answer the verdict and P(yes/no/maybe).
    logprobs: list[dict[int, float]] | None = None
    verdict: str | None = None
    verdict_probs: dict[str, float] | None = None


async def join_stream(stream: AsyncIterator[Chunk]) -> GenerationResult:
    """A whole answer from its stream (closed at the end, also when the caller is cancelled)."""
    from contextlib import aclosing

    started = time.perf_counter()
    ttft = None
    parts: list[str] = []
    last = Chunk("")
    async with aclosing(stream) as chunks:
        async for chunk in chunks:
            if chunk.text and ttft is None:
                ttft = time.perf_counter() - started
            parts.append(chunk.text)
            last = chunk
    return GenerationResult(
        text="".join(parts),
        prompt_tokens=last.prompt_tokens or 0,
        completion_tokens=last.completion_tokens or 0,
        finish_reason=last.finish_reason or "stop",
        total_s=time.perf_counter() - started,
        ttft_s=ttft,
        logprobs=last.logprobs,
        verdict=last.verdict,
        verdict_probs=last.verdict_probs,
    )


class EngineRejected(EngineError):
    """The model refused the request itself as invalid (an upstream's HTTP 400, e.g. a prompt over its context):
    the caller's mistake, not the model failing."""


def count_chat_tokens(tokenizer: Any, messages: list[Message]) -> int:
    """How many tokens ``messages`` are for the model: its chat template applied, with the generation prompt."""
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    return len(ids)


class TokenCounter:
    """Counts prompts in a model's tokens, with a tokenizer of its own behind a lock: the engine's tokenizer is
    busy in generation threads, and a fast tokenizer shared across threads can fail ("Already borrowed")."""

    def __init__(self) -> None:
        self.tokenizer: Any = None
        self._lock = threading.Lock()

    def load(self, tokenizer_path: str) -> None:
        from ragroute.models import load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer_path)

    def count(self, messages: list[Message]) -> int:
        with self._lock:
            return count_chat_tokens(self.tokenizer, messages)


class StreamingEngine(ABC):
    """A loaded model answering concurrent chat requests, streamed (the async face of an engine).

    Every engine stops work it no longer owes: when the stream is closed early or the awaiting task is cancelled
    (a timeout, a client that left), the generation is aborted (vLLM's ``abort``, a stopping criterion in
    transformers, closing an upstream's stream)."""

    model_name: str
    context_length: int | None = None  # prompt + answer tokens; None: it cannot count locally (an upstream)

    async def start(self) -> None:  # noqa: B027 - optional: load weights, open connections
        """Load the model / open connections. Called once before the first request."""

    async def check_health(self) -> None:  # noqa: B027 - in-process engines are up once started
        """Raise if the model cannot answer now (the health probe)."""

    def count_prompt_tokens(self, messages: list[Message]) -> int:
        """The prompt's length in this model's tokens (called only where ``context_length`` is set; blocking)."""
        raise NotImplementedError

    def stream(self, messages: list[Message], sampling: SamplingConfig,
               after: Any = None) -> AsyncIterator[Chunk]:
        """Yield the answer as it is generated; raise :class:`EngineError` when the model fails. Verdict-first
        when ``sampling.verdict.enabled``; ``after`` (a :class:`~ragroute.engines.verdict_first.VerdictStep` this
        model already took, e.g. the cascade's) continues that verdict instead of taking it again."""
        if sampling.verdict.enabled or after is not None:
            from ragroute.engines.verdict_first import stream_verdict_first

            return stream_verdict_first(self, messages, sampling, after)
        return self._stream(messages, sampling)

    @abstractmethod
    def _stream(self, messages: list[Message], sampling: SamplingConfig) -> AsyncIterator[Chunk]:
        """One generation, streamed (chat messages ending with an assistant message continue it)."""

    def verdict_tokenizer(self) -> Any:
        """The model's tokenizer (it names the verdict tokens of verdict-first answers)."""
        raise UserError(f"the {type(self).__name__} cannot write verdict-first answers")

    async def verdict(self, messages: list[Message], sampling: SamplingConfig) -> Any:
        """The verdict step alone (one constrained token): a :class:`~ragroute.engines.verdict_first.VerdictStep`."""
        from ragroute.engines.verdict_first import verdict_step_async

        return await verdict_step_async(self, messages, sampling)

    async def complete(self, messages: list[Message], sampling: SamplingConfig, after: Any = None) -> GenerationResult:
        """The joined stream."""
        return await join_stream(self.stream(messages, sampling, after))

    async def close(self) -> None:  # noqa: B027 - optional
        """Release the model or the connections."""


# name -> "module:Class"; imported lazily by create_engine / create_streaming_engine.
ENGINES: Registry[type] = Registry("engine", {
    "vllm": "ragroute.engines.vllm_engine:VLLMEngine",
    "openai": "ragroute.engines.openai_engine:OpenAIEngine",
    "transformers": "ragroute.engines.hf_engine:TransformersEngine",
})
STREAMING_ENGINES: Registry[type] = Registry("engine", {
    "vllm": "ragroute.engines.vllm_engine:AsyncVLLMEngine",
    "openai": "ragroute.engines.openai_engine:AsyncOpenAIEngine",
    "transformers": "ragroute.engines.hf_engine:StreamingTransformersEngine",
})


def register_engine(name: str, target: str, streaming: str | None = None) -> None:
    """Make a third-party engine available by name (``target``/``streaming`` are ``"module:Class"`` of its batch
    and streaming faces)."""
    ENGINES[name] = target
    if streaming is not None:
        STREAMING_ENGINES[name] = streaming


def _engine_class(registry: Registry[type], name: str) -> Any:
    try:
        return registry[name]
    except UnknownName as exc:
        raise UserError(str(exc)) from None


def create_engine(model: Any, engine: EngineConfig) -> GenerationEngine:
    """The batch face of the engine named in ``engine`` for the :class:`ragroute.models.ModelSpec` ``model``."""
    cls = _engine_class(ENGINES, engine.name)
    _check_shape_only(model, engine)
    return cls(model, engine)


def create_streaming_engine(model: Any, engine: EngineConfig) -> StreamingEngine:
    """The async streaming face of the engine named in ``engine``; call ``await start()`` before use."""
    cls = _engine_class(STREAMING_ENGINES, engine.name)
    _check_shape_only(model, engine)
    return cls(model, engine)


def _check_shape_only(model: Any, engine: EngineConfig) -> None:
    if getattr(model, "shape_only", False) and engine.name != "vllm":
        raise UserError(f"model '{model.name}' is shape-only (random weights): it runs on the vllm engine only")
