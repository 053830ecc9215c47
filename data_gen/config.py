"""Settings of one data_gen run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ragroute.engines.base import EngineConfig, SamplingConfig
from ragroute.rag.pipeline import PipelineConfig


@dataclass
class DataGenConfig:
    """One data_gen run. The stored top-k logprobs of each answer token (offline logit KD) are
    ``sampling.logprobs``, the one sampling the run uses."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"top_logprobs": "sampling.logprobs"}

    model_config: str = field(
        default="smollm2-135m", metadata={"help": "model config name in configs/models or a model YAML path"}
    )
    questions: str | None = field(
        default=None,
        metadata={"help": "questions file: PubMedQA ori_pqal JSON, JSONL (id, question, ...), or 'demo'"},
    )
    corpus: str | None = field(
        default=None,
        metadata={"help": "documents to retrieve from, or 'demo' (default: pipeline.corpus, else the questions file "
            "itself when it is PubMedQA)"},
    )
    out: str | None = field(default=None, metadata={"help": "output directory (records.jsonl + manifest.json)"})
    batch_size: int = field(
        default=32, metadata={"help": "questions per engine call; records are written after each batch"}
    )
    limit: int | None = field(default=None, metadata={"help": "only the first N questions (after sharding)"})
    prefetch: bool = field(
        default=True,
        metadata={"help": "build the next batch's retrieval and prompts while the engine answers this one "
            "(same records either way)"},
    )
    shard: str = field(
        default="0/1", metadata={"help": "i/N: this worker answers every question whose index % N == i"}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "discard records written with a different config instead of refusing"}
    )
    attribute_citations: bool = field(
        default=True,
        metadata={"help": "also store each answer with a citation on every sentence (cited_answer): the model's own "
                  "[i] markers where it wrote them, else each sentence attributed to its best-supporting passage "
                  "(citation_source says which)"},
    )
    executor: str = field(
        default="local",
        metadata={"help": "local (this process) or ray (Ray Data: a retrieval stage and an engine actor pool, "
            "on a local or remote Ray cluster; needs pip install -e .[ray])"},
    )
    ray_address: str | None = field(
        default=None,
        metadata={"help": "ray: cluster to join ('auto', HOST:PORT, ray://HOST:10001; default: $RAY_ADDRESS, "
            "else a Ray instance on this machine for the run)"},
    )
    ray_generation: str = field(
        default="engine",
        metadata={"help": "ray: 'engine' (ragroute's engine in an actor pool: vllm, vllm-cpu, transformers, openai) "
            "or 'ray-llm' (ray.data.llm's vLLM processor, GPU workers)"},
    )
    ray_actors: int = field(
        default=1, metadata={"help": "ray: model replicas answering at once (actor pool size / processor concurrency)"}
    )
    ray_cpus_per_actor: float = field(default=1.0, metadata={"help": "ray: CPUs reserved per model replica"})
    ray_gpus_per_actor: float = field(
        default=0.0,
        metadata={"help": "ray, generation 'engine': GPUs reserved per replica (set engine.vllm.tensor_parallel_size "
            "to match); 'ray-llm' reserves tensor_parallel_size GPUs itself"},
    )
    ray_prepare_actors: int = field(
        default=1, metadata={"help": "ray: retrieval + prompt building workers (each holds the indexes)"}
    )
    ray_prepare_cpus: float = field(default=0.5, metadata={"help": "ray: CPUs reserved per retrieval worker"})
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        self.shard_index, self.shard_count = parse_shard(self.shard)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, not {self.limit}")
        if self.executor not in ("local", "ray"):
            raise ValueError(f"executor must be local or ray, not '{self.executor}'")
        if self.ray_generation not in ("engine", "ray-llm"):
            raise ValueError(f"ray_generation must be engine or ray-llm, not '{self.ray_generation}'")
        if self.executor == "ray" and self.ray_generation == "ray-llm" and self.sampling.verdict.enabled:
            raise ValueError("ray_generation ray-llm cannot write verdict-first answers (two engine steps); use "
                             "ray_generation engine")
        if self.ray_generation == "ray-llm" and self.engine.name != "vllm":
            raise ValueError(f"ray_generation ray-llm runs vLLM: engine.name must be vllm, not '{self.engine.name}'")
        if self.ray_actors < 1 or self.ray_prepare_actors < 1:
            raise ValueError("ray_actors and ray_prepare_actors must be >= 1")
        if min(self.ray_cpus_per_actor, self.ray_gpus_per_actor, self.ray_prepare_cpus) < 0:
            raise ValueError("ray_cpus_per_actor, ray_gpus_per_actor and ray_prepare_cpus must be >= 0")
        if self.executor == "ray" and (self.engine.vllm.devices is not None or self.engine.vllm.data_parallel_size > 1):
            raise ValueError("with executor ray, Ray places the model replicas: set ray_actors and "
                             "ray_gpus_per_actor instead of engine.vllm.devices / engine.vllm.data_parallel_size")
        if self.engine.vllm.data_parallel_size > 1 and self.shard_count > 1:
            raise ValueError(f"engine.vllm.data_parallel_size {self.engine.vllm.data_parallel_size} already splits the run "
                             f"into one shard per GPU; give it or --shard {self.shard}, not both")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/N (e.g. 0/4), not '{text}'") from None
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in 0..{count - 1}, not {index}")
    return index, count
