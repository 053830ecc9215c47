"""Settings of the routed inference API: the two models and their backends, routing, limits and auth."""

from __future__ import annotations

from dataclasses import dataclass, field

# Kept here rather than imported from serve.backends so that loading a config never imports a backend;
# serve.backends.register_backend adds third-party names.
BACKEND_KINDS = ["vllm", "transformers", "openai"]
NO_ROUTER_POLICIES = ("teacher", "heuristic", "error")
# Two in-process vLLM engines share one GPU; leave room for the CUDA contexts and activations of both.
MAX_SHARED_GPU_MEMORY = 0.9


@dataclass
class BackendConfig:
    """Where one model runs: in this process (vLLM async engine, transformers) or behind an upstream URL."""

    backend: str = field(
        default="transformers",
        metadata={"help": "vllm (in-process AsyncLLM), transformers (in-process, worker thread) or openai (upstream URL)"},
    )
    model: str = field(
        default="",
        metadata={
            "help": "model config name (configs/models/NAME.yaml), a model YAML path, or a model path "
            "(ragroute:NAME, local directory, hub id); with backend=openai only used as a display name"
        },
    )
    name: str | None = field(
        default=None, metadata={"help": "name reported in responses and metrics (default: the model spec's name)"}
    )
    dtype: str = field(default="auto", metadata={"help": "in-process: auto, float32, bfloat16 (for a plain path)"})
    max_model_len: int = field(default=4096, metadata={"help": "in-process: longest prompt + answer (plain path)"})
    timeout_s: float = field(
        default=60.0,
        metadata={
            "help": "seconds one generation may take (streaming: until the first token and between tokens); "
            "a student that exceeds it falls back to the teacher"
        },
    )
    # upstream OpenAI-compatible server (vllm serve, TGI, SGLang, ...)
    base_url: str | None = field(
        default=None, metadata={"help": "openai: upstream base URL including /v1, e.g. http://10.0.0.5:8000/v1"}
    )
    served_model_name: str | None = field(
        default=None, metadata={"help": "openai: the model name the upstream expects (default: its first model)"}
    )
    api_key_env: str | None = field(
        default=None, metadata={"help": "openai: environment variable holding the upstream's API key"}
    )
    connect_timeout_s: float = field(default=5.0, metadata={"help": "openai: seconds to open a connection"})
    max_retries: int = field(
        default=0,
        metadata={"help": "openai: retries of a failed connection before giving up (the student falls back anyway)"},
    )
    max_connections: int = field(default=256, metadata={"help": "openai: connection pool size to the upstream"})
    # in-process engines
    device: str = field(default="auto", metadata={"help": "transformers: cpu, cuda or auto"})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs the model is split across"})
    gpu_memory_utilization: float = field(default=0.85, metadata={"help": "vllm: share of GPU memory to use"})
    kv_cache_memory_gb: float | None = field(
        default=None, metadata={"help": "vllm: KV cache GiB (default: 1 GiB on CPU, derived on GPU)"}
    )
    quantization: str | None = field(default=None, metadata={"help": "vllm: fp8, awq, gptq or none"})
    max_num_seqs: int | None = field(default=None, metadata={"help": "vllm: most sequences batched at once"})
    enforce_eager: bool | None = field(
        default=None, metadata={"help": "vllm: skip graph compilation (default: on for CPU, off for GPU)"}
    )

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_KINDS:
            raise ValueError(f"backend must be one of {', '.join(BACKEND_KINDS)}, not '{self.backend}'")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend=openai needs base_url (the upstream server, e.g. http://host:8000/v1)")
        if self.backend != "openai" and not self.model:
            raise ValueError(f"backend={self.backend} needs model (a model config name, YAML or path)")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("timeout_s and connect_timeout_s must be > 0")
        if self.max_retries < 0 or self.max_connections < 1:
            raise ValueError("max_retries must be >= 0 and max_connections >= 1")


@dataclass
class RoutingConfig:
    """Which model answers: a fitted router file, or a stated policy when there is none."""

    router_path: str | None = field(
        default=None, metadata={"help": "router bundle written by `ragroute router fit` (router.skops); $VARS expand"}
    )
    threshold: float | None = field(
        default=None, metadata={"help": "override the router's own threshold (score >= threshold -> teacher)"}
    )
    trusted_types: list[str] = field(
        default_factory=list,
        metadata={"help": "extra types to trust in the router file (e.g. sklearn.tree._tree.Tree for gboost you fitted)"},
    )
    if_missing: str = field(
        default="heuristic",
        metadata={
            "help": "without a router file: 'heuristic' (the design note's rule: short What/Which/Who/When questions "
            "go to the student, everything else to the teacher), 'teacher' (everything to the teacher) or 'error'"
        },
    )
    use_retrieval_signals: bool = field(
        default=True, metadata={"help": "pass retrieval score signals to the router on /v1/answer"}
    )
    cascade_rule: str | None = field(
        default=None,
        metadata={"help": "cascade mode for /v1/answer: the rule file from `ragroute router fit-cascade`; the student "
                  "starts and its verdict probabilities keep it or escalate to the teacher (vllm/transformers backends)"},
    )

    def __post_init__(self) -> None:
        if self.if_missing not in NO_ROUTER_POLICIES:
            raise ValueError(f"if_missing must be one of {', '.join(NO_ROUTER_POLICIES)}, not '{self.if_missing}'")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], not {self.threshold}")


@dataclass
class FallbackConfig:
    """When the student's answer is replaced by the teacher's."""

    enabled: bool = field(default=True, metadata={"help": "retry on the teacher when the student fails"})
    on_error: bool = field(default=True, metadata={"help": "fall back when the student raises or its upstream errors"})
    on_timeout: bool = field(default=True, metadata={"help": "fall back when the student exceeds its timeout_s"})
    on_empty: bool = field(default=True, metadata={"help": "fall back when the student's answer is blank"})


@dataclass
class LimitsConfig:
    """Bounds that protect the server from oversized or excessive requests."""

    max_question_chars: int = field(default=2000, metadata={"help": "longest accepted question / user message"})
    max_messages: int = field(default=64, metadata={"help": "most chat messages per request"})
    max_prompt_chars: int = field(
        default=32_000, metadata={"help": "most characters of all chat messages together (clients may send context)"}
    )
    max_body_bytes: int = field(default=1_000_000, metadata={"help": "largest accepted request body (413 beyond)"})
    max_tokens_default: int = field(default=256, metadata={"help": "answer length when the request gives none"})
    max_tokens_limit: int = field(default=1024, metadata={"help": "largest max_tokens a request may ask for"})
    max_concurrent: int = field(default=64, metadata={"help": "requests generating at once"})
    max_queue: int = field(
        default=256, metadata={"help": "requests waiting for a slot beyond max_concurrent; more get 429"}
    )
    request_timeout_s: float = field(default=120.0, metadata={"help": "whole-request deadline (504 beyond)"})

    def __post_init__(self) -> None:
        for name in ("max_question_chars", "max_messages", "max_prompt_chars", "max_body_bytes", "max_tokens_default", "max_concurrent"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, not {self.max_queue}")
        if self.max_tokens_limit < self.max_tokens_default:
            raise ValueError("max_tokens_limit must be >= max_tokens_default")
        if self.request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be > 0")


@dataclass
class AuthConfig:
    """Optional bearer-token auth for the /v1 endpoints (/health, /ready and /metrics stay open)."""

    api_key: str | None = field(
        default=None, metadata={"help": "required bearer token (prefer api_key_env; a key in YAML ends up in git)"}
    )
    api_key_env: str | None = field(
        default="RAGROUTE_API_KEY",
        metadata={"help": "environment variable with the required bearer token; unset or empty = no auth"},
    )


@dataclass
class ServeConfig:
    """The routed inference API: RAG pipeline -> router -> student or teacher, with fallback."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on (0.0.0.0 for all interfaces)"})
    port: int = field(default=8080, metadata={"help": "TCP port (0 = any free port)"})
    student: BackendConfig = field(
        default_factory=lambda: BackendConfig(model="ragroute:smollm2-135m-pruned", name="smollm2-135m-pruned"),
        metadata={"help": "the cheap model"},
    )
    teacher: BackendConfig = field(
        default_factory=lambda: BackendConfig(model="smollm2-135m"), metadata={"help": "the strong model"}
    )
    rag: bool = field(
        default=True,
        metadata={"help": "load the RAG pipeline and serve /v1/answer; false = a routing proxy for chat only"},
    )
    pipeline: str | None = field(
        default=None, metadata={"help": "RAG pipeline YAML (ragroute.rag.pipeline.PipelineConfig); default settings if unset"}
    )
    corpus: str | None = field(
        default=None, metadata={"help": "corpus (JSONL of id/title/text, PubMedQA json, or demo); default: the pipeline config's, else demo"}
    )
    pipeline_workers: int = field(
        default=1, metadata={"help": "threads running retrieval + rerank (CPU-bound; keep at most the core count)"}
    )
    routing: RoutingConfig = field(default_factory=RoutingConfig, metadata={"help": "router settings"})
    fallback: FallbackConfig = field(default_factory=FallbackConfig, metadata={"help": "student -> teacher fallback"})
    limits: LimitsConfig = field(default_factory=LimitsConfig, metadata={"help": "request limits"})
    auth: AuthConfig = field(default_factory=AuthConfig, metadata={"help": "API-key auth"})
    temperature: float = field(default=0.0, metadata={"help": "default sampling temperature (requests may override)"})
    log_level: str = field(default="info", metadata={"help": "uvicorn log level: debug, info, warning, error"})

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, not {self.port}")
        if self.pipeline_workers < 1:
            raise ValueError("pipeline_workers must be >= 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        both = (self.student, self.teacher)
        share = sum(b.gpu_memory_utilization for b in both)
        if all(b.backend == "vllm" for b in both) and share > MAX_SHARED_GPU_MEMORY:
            # Both in-process engines start on the same GPU(s); each reserves its share of the whole card.
            raise ValueError(
                f"student and teacher both run vLLM in this process on the same GPU: their gpu_memory_utilization "
                f"must add up to at most {MAX_SHARED_GPU_MEMORY} (e.g. teacher 0.55, student 0.3), not {share:.2f}"
            )
