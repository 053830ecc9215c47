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

    def __post_init__(self) -> None:
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
