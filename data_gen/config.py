"""Settings of one data_gen run."""

from __future__ import annotations

from dataclasses import dataclass, field

from ragroute.engines.base import EngineConfig, SamplingConfig
from ragroute.rag.pipeline import PipelineConfig
from ragroute.verdict import VerdictConfig


@dataclass
class DataGenConfig:
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
    shard: str = field(
        default="0/1", metadata={"help": "i/N: this worker answers every question whose index % N == i"}
    )
    top_logprobs: int | None = field(
        default=None, metadata={"help": "store the top-k logprobs of each answer token (offline logit KD)"}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "discard records written with a different config instead of refusing"}
    )
    attribute_citations: bool = field(
        default=True,
        metadata={"help": "an answer without [i] markers of its own gets each sentence attributed to its best-supporting "
                  "passage (the record's citation_source says 'attributed')"},
    )
    verdict: VerdictConfig = field(default_factory=VerdictConfig, metadata={"help": "verdict-first answers"})
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        self.shard_index, self.shard_count = parse_shard(self.shard)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, not {self.limit}")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/N (e.g. 0/4), not '{text}'") from None
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in 0..{count - 1}, not {index}")
    return index, count
