"""Settings of the corpus commands."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CorpusBuildConfig:
    inputs: list[str] = field(
        default_factory=list,
        metadata={"help": "input files: JSONL (id, title, text), PubMedQA ori_pqal .json, .parquet, .arrow/.feather, "
                  "PubMed baseline/update .xml or .xml.gz"},
    )
    out: str = field(default="", metadata={"help": "the store directory to create (must not exist yet)"})
    workers: int = field(
        default=1,
        metadata={"help": "input files parsed and written at once, one process each (PubMed's ~1,300 baseline files: "
                  "up to the number of cores; each process stays under ~250 MB)"},
    )

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, not {self.workers}")
        if not self.inputs:
            raise ValueError("give at least one --input file")
        if not self.out:
            raise ValueError("--out (the store directory) is required")


@dataclass
class CorpusUpdateConfig:
    store: str = field(default="", metadata={"help": "an existing store directory (from `ragroute corpus build`)"})
    inputs: list[str] = field(
        default_factory=list,
        metadata={"help": "new files (same formats as build; PubMed update files add, replace and delete PMIDs)"},
    )

    def __post_init__(self) -> None:
        if not self.store or not self.inputs:
            raise ValueError("give --store and at least one --input file")
