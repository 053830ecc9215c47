"""Settings of one evaluation run."""

from __future__ import annotations

from dataclasses import dataclass, field

from ragroute.engines.base import EngineConfig, SamplingConfig
from ragroute.rag.pipeline import PipelineConfig


@dataclass
class EvalConfig:
    dataset: str | None = field(
        default=None, metadata={"help": "questions with gold answers: PubMedQA ori_pqal JSON, JSONL, or 'demo'"}
    )
    corpus: str | None = field(
        default=None, metadata={"help": "documents to retrieve from (default: the dataset's own abstracts)"}
    )
    out: str | None = field(default=None, metadata={"help": "output directory (metrics.json, report.md, plots)"})
    limit: int | None = field(default=None, metadata={"help": "only the first N questions"})
    teacher: str = field(default="smollm2-135m", metadata={"help": "teacher model config name or YAML path"})
    student: str = field(
        default="demo",
        metadata={"help": "student model config name or YAML path; 'demo' = the student `ragroute demo` trained"},
    )
    router: str | None = field(
        default="demo",
        metadata={"help": "router file (.skops); 'demo' = the one `ragroute demo` fitted; null = no routed system"},
    )
    cascade: str | None = field(
        default=None,
        metadata={"help": "cascade rule file (`ragroute router fit-cascade`): adds the 'cascade' system, which keeps "
                  "the student's answer unless its verdict probabilities escalate the question to the teacher "
                  "(needs verdict-first answers: sampling.verdict.enabled in the system)"},
    )
    trust_router: list[str] = field(
        default_factory=list, metadata={"help": "extra types to trust when loading a router file from elsewhere"}
    )
    teacher_records: str | None = field(
        default=None, metadata={"help": "reuse these teacher answers (data_gen output) instead of generating"}
    )
    student_records: str | None = field(
        default=None, metadata={"help": "reuse these student answers (data_gen output) instead of generating"}
    )
    pipeline_variants: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "extra teacher systems, NAME: pipeline YAML (e.g. the seed's v3 vs v3.1 settings)"},
    )
    variant_sampling: dict[str, int] = field(
        default_factory=dict, metadata={"help": "max_tokens per pipeline variant (the seed: v3 512, v3.1 384)"}
    )
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for the 95% confidence intervals"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap"})
    batch_size: int = field(default=32, metadata={"help": "questions per engine call"})
    latency_sample: int = field(
        default=16,
        metadata={"help": "questions answered one at a time (batch 1) for the per-question latency figures; "
                  "0 skips that pass (latencies are then null)"},
    )
    pipeline: PipelineConfig | None = field(
        default=None, metadata={"help": "RAG pipeline; unset: the one the router's labels came from, else defaults"}
    )
    engine: EngineConfig = field(default_factory=EngineConfig)
    sampling: SamplingConfig | None = field(
        default=None, metadata={"help": "sampling; unset: the one the router's labels came from, else defaults"}
    )
    system_override: bool = field(
        default=False,
        metadata={"help": "evaluate the configured models/pipeline/sampling even where they differ from the system "
                  "the router's labels came from (logged, and recorded in metrics.json)"},
    )

    def __post_init__(self) -> None:
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, not {self.bootstrap}")
        if self.latency_sample < 0:
            raise ValueError(f"latency_sample must be >= 0, not {self.latency_sample}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, not {self.limit}")
