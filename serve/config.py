"""Settings of the routed inference API: the two models and their backends, routing, limits and auth."""

from __future__ import annotations

from dataclasses import dataclass, field

from ragroute.engines.base import EngineConfig, OpenAIConfig, SamplingConfig

NO_ROUTER_POLICIES = ("teacher", "heuristic", "error")
# Two in-process vLLM engines share one GPU; leave room for the CUDA contexts and activations of both.
MAX_SHARED_GPU_MEMORY = 0.9


def _serve_engine() -> EngineConfig:
    # A serving default: in-process transformers; an upstream gets a connection pool sized for serving and no
    # retries of its own (a failing student falls back to the teacher instead).
    return EngineConfig(name="transformers", openai=OpenAIConfig(max_retries=0, concurrency=256))


@dataclass
class BackendConfig:
    """One model and the engine that runs it: in this process (vLLM ``AsyncLLM``, transformers) or behind an
    upstream OpenAI-compatible URL. The engine settings are :class:`ragroute.engines.base.EngineConfig`, the same
    ones data_gen and eval use."""

    model: str = field(
        default="",
        metadata={
            "help": "model config name (configs/models/NAME.yaml), model YAML, checkpoint directory or model path; "
            "empty: the model of the system the router's labels came from. With engine openai: the served model"
        },
    )
    name: str | None = field(
        default=None, metadata={"help": "name reported in responses and metrics (default: the model spec's name)"}
    )
    dtype: str | None = field(
        default=None, metadata={"help": "override the model spec's dtype (auto, float32, bfloat16)"}
    )
    engine: EngineConfig = field(default_factory=_serve_engine, metadata={"help": "the engine that runs the model"})
    timeout_s: float = field(
        default=60.0,
        metadata={
            "help": "seconds one generation may take (streaming: until the first token and between tokens); "
            "a student that exceeds it falls back to the teacher"
        },
    )

    def __post_init__(self) -> None:
        if self.engine.name == "openai" and not self.engine.openai.base_url:
            raise ValueError("engine openai needs engine.openai.base_url (the upstream server, e.g. "
                             "http://host:8000/v1)")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")


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
    max_body_bytes: int = field(
        default=1_000_000, metadata={"help": "largest request body, counted on the bytes received (413 beyond)"}
    )
    body_timeout_s: float = field(
        default=30.0, metadata={"help": "seconds a client may take to send its request body (408 beyond)"}
    )
    max_stop: int = field(default=4, metadata={"help": "most stop strings per request"})
    max_stop_chars: int = field(default=100, metadata={"help": "longest stop string"})
    max_tokens_limit: int = field(default=1024, metadata={"help": "largest max_tokens a request may ask for"})
    max_concurrent: int = field(default=64, metadata={"help": "requests generating at once"})
    max_queue: int = field(
        default=256, metadata={"help": "requests waiting for a slot beyond max_concurrent; more get 429"}
    )
    request_timeout_s: float = field(default=120.0, metadata={"help": "whole-request deadline (504 beyond)"})
    max_concurrent_per_client: int = field(
        default=32,
        metadata={"help": "/v1 requests (streams included) one client may have open at once, counted per API key, "
                  "else per address; more get 429 (0 = no cap: a load generator standing in for many clients)"},
    )

    def __post_init__(self) -> None:
        if self.max_concurrent_per_client < 0:
            raise ValueError(f"max_concurrent_per_client must be >= 0, not {self.max_concurrent_per_client}")
        for name in ("max_question_chars", "max_messages", "max_prompt_chars", "max_body_bytes", "max_tokens_limit",
                     "max_concurrent", "max_stop_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.max_queue < 0 or self.max_stop < 0:
            raise ValueError(f"max_queue and max_stop must be >= 0, not {self.max_queue} and {self.max_stop}")
        if self.request_timeout_s <= 0 or self.body_timeout_s <= 0:
            raise ValueError("request_timeout_s and body_timeout_s must be > 0")


@dataclass
class HttpConfig:
    """Connection limits, enforced by the HTTP server (:mod:`serve.transport`) before auth and before any body is
    read, and the graceful shutdown."""

    max_header_bytes: int = field(
        default=16_384, metadata={"help": "largest request head (request line and headers together); 431 beyond"}
    )
    max_headers: int = field(default=100, metadata={"help": "most header lines in a request; 431 beyond"})
    header_timeout_s: float = field(
        default=10.0,
        metadata={"help": "seconds a connection has to send a complete request head, from connecting or from the end "
                  "of its previous response (a slow-loris trickling bytes is closed with 408)"},
    )
    keep_alive_s: float = field(default=5.0, metadata={"help": "seconds an idle keep-alive connection stays open"})
    max_connections: int = field(
        default=1000, metadata={"help": "open connections (and requests in progress) beyond which requests get 503"}
    )
    write_timeout_s: float = field(
        default=30.0,
        metadata={"help": "seconds a client may accept none of its response (its receive window full) before it "
                  "is cut off and its generation stopped; also the grace past limits.request_timeout_s for "
                  "writing a response"},
    )
    shutdown_timeout_s: float = field(
        default=30.0,
        metadata={"help": "on SIGTERM/SIGINT: seconds in-flight requests may take to finish (new connections are "
                  "refused at once); then the rest are aborted and the process exits 0"},
    )

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_headers", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        for name in ("header_timeout_s", "keep_alive_s", "write_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, not {getattr(self, name)}")
        if self.shutdown_timeout_s < 0:
            raise ValueError(f"shutdown_timeout_s must be >= 0, not {self.shutdown_timeout_s}")


@dataclass
class AuthConfig:
    """Optional bearer-token auth for the /v1 endpoints (/health, /ready and /metrics stay open)."""

    api_key: str | None = field(
        default=None, metadata={"help": "required bearer token (prefer api_key_env; a key in YAML ends up in git)"}
    )
    api_key_env: str | None = field(
        default="RAGROUTE_API_KEY",
        metadata={"help": "environment variable with the required bearer token (unset or empty = no key)"},
    )
    allow_anonymous: bool = field(
        default=False,
        metadata={"help": "serve without a key on a non-loopback host; without it such a server refuses to start"},
    )


@dataclass
class HealthConfig:
    """Upstream health probes and the per-model circuit breaker fed by them and by failed requests."""

    probe_interval_s: float = field(
        default=5.0, metadata={"help": "seconds between health probes of each model (0 = no probes)"}
    )
    probe_timeout_s: float = field(default=2.0, metadata={"help": "seconds one probe may take"})
    failure_threshold: int = field(
        default=3, metadata={"help": "consecutive failed generations (errors, timeouts) that open a model's circuit"}
    )
    open_s: float = field(
        default=10.0,
        metadata={"help": "seconds an open circuit stays open before one trial request (a passing probe closes it too)"},
    )

    def __post_init__(self) -> None:
        if self.probe_interval_s < 0 or self.probe_timeout_s <= 0 or self.open_s <= 0:
            raise ValueError("probe_interval_s must be >= 0, probe_timeout_s and open_s > 0")
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, not {self.failure_threshold}")


@dataclass
class ServeConfig:
    """The routed inference API: RAG pipeline -> router -> student or teacher, with fallback."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on (0.0.0.0 for all interfaces)"})
    port: int = field(default=8080, metadata={"help": "TCP port (0 = any free port)"})
    student: BackendConfig = field(
        default_factory=BackendConfig, metadata={"help": "the cheap model (default: the router file's student)"}
    )
    teacher: BackendConfig = field(
        default_factory=BackendConfig, metadata={"help": "the strong model (default: the router file's teacher)"}
    )
    rag: bool = field(
        default=True,
        metadata={"help": "load the RAG pipeline and serve /v1/answer; false = a routing proxy for chat only"},
    )
    pipeline: str | None = field(
        default=None,
        metadata={"help": "RAG pipeline YAML (ragroute.rag.pipeline.PipelineConfig); unset: the pipeline of the system "
                  "the router's labels came from, else default settings"},
    )
    sampling: SamplingConfig | None = field(
        default=None,
        metadata={"help": "default sampling (requests may override max_tokens, temperature, top_p, stop, seed); "
                  "unset: the sampling of the system the router's labels came from, else defaults"},
    )
    system_override: bool = field(
        default=False,
        metadata={"help": "serve the configured models/pipeline/sampling even where they differ from the system the "
                  "router's labels and the student's training data came from (logged, shown in /health)"},
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
    http: HttpConfig = field(
        default_factory=HttpConfig, metadata={"help": "connection limits and timeouts, graceful shutdown"}
    )
    auth: AuthConfig = field(default_factory=AuthConfig, metadata={"help": "API-key auth"})
    health: HealthConfig = field(default_factory=HealthConfig, metadata={"help": "health probes, circuit breaker"})
    docs: bool = field(default=False, metadata={"help": "serve /docs, /redoc and /openapi.json"})
    log_level: str = field(default="info", metadata={"help": "uvicorn log level: debug, info, warning, error"})

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, not {self.port}")
        if self.pipeline_workers < 1:
            raise ValueError("pipeline_workers must be >= 1")
        check_gpu_split(self.student.engine, self.teacher.engine)
        if self.sampling is not None:
            check_answer_length(self.sampling, self.limits)


def shared_vllm_gpus(student: EngineConfig, teacher: EngineConfig) -> list[int]:
    """The GPUs two in-process vLLM engines both run on (none unless both are vLLM)."""
    if not (student.name == teacher.name == "vllm"):
        return []
    return sorted(set(student.vllm.gpu_ids()) & set(teacher.vllm.gpu_ids()))


def check_gpu_split(student: EngineConfig, teacher: EngineConfig) -> None:
    """Two in-process vLLM engines that share a GPU must split its memory; on separate GPUs
    (``engine.vllm.devices``) each may take what it likes."""
    shared = shared_vllm_gpus(student, teacher)
    share = student.vllm.gpu_memory_utilization + teacher.vllm.gpu_memory_utilization
    if shared and share > MAX_SHARED_GPU_MEMORY:
        # Each engine reserves its share of the whole card.
        raise ValueError(
            f"student and teacher both run vLLM in this process on GPU {shared[0]}: their "
            f"engine.vllm.gpu_memory_utilization must add up to at most {MAX_SHARED_GPU_MEMORY} (e.g. teacher "
            f"0.55, student 0.3), not {share:.2f}; or put them on different GPUs (e.g. teacher "
            f"engine.vllm.devices: [0], student engine.vllm.devices: [1])"
        )


def shared_gpu_advice(student: EngineConfig, teacher: EngineConfig) -> str | None:
    """A warning for two in-process vLLM engines on one CUDA GPU with no MPS daemon: they run in two processes,
    whose kernels the GPU time-slices, so every teacher answer that overlaps student work slows by that work
    (measured in docs/benchmarks/gpu.md). None where that does not apply."""
    from ragroute.hardware import has_cuda, mps_active

    shared = shared_vllm_gpus(student, teacher)
    if not shared or mps_active() or not has_cuda():
        return None
    return (f"student and teacher share GPU {shared[0]} without CUDA MPS: the GPU time-slices their engine "
            "processes, so answers that overlap take turns on the card (p99 latency suffers under load). Start "
            "an MPS daemon before serve (nvidia-cuda-mps-control -d) or give each model its own GPU "
            "(engine.vllm.devices); see docs/DEPLOYMENT.md")


def check_answer_length(sampling: SamplingConfig, limits: LimitsConfig) -> None:
    if sampling.max_tokens > limits.max_tokens_limit:
        raise ValueError(f"limits.max_tokens_limit ({limits.max_tokens_limit}) is below the served system's answer "
                         f"length sampling.max_tokens ({sampling.max_tokens})")
