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


@dataclass
class IndexConfig:
    """How ``ragroute index build`` indexes a corpus store (one YAML per setup in configs/index/)."""

    sparse: bool = field(default=True, metadata={"help": "build the BM25 index (tantivy, on disk)"})
    bm25_stemmer: str = field(default="english", metadata={"help": "Snowball stemmer language, or 'none'"})
    bm25_stopwords: str = field(default="en", metadata={"help": "stop-word list (bm25s name), or 'none'"})
    sparse_heap_mb: int = field(
        default=256, metadata={"help": "tantivy writer memory (the sparse build's memory bound), MB"}
    )
    sparse_threads: int = field(
        default=0, metadata={"help": "tantivy indexing threads (0: tantivy's choice from the CPU count, at most 8)"}
    )
    sparse_parts: int = field(
        default=1,
        metadata={"help": "split the BM25 index into this many parts searched at the same time in threads (one "
                  "tantivy search uses one core: at 10M abstracts, 2 parts on 2 cores halve a question's BM25 "
                  "time); 1 for small corpora"},
    )
    sparse_commit_every: int = field(
        default=500_000, metadata={"help": "documents between commits (a killed build resumes from the last)"}
    )
    dense: bool = field(default=True, metadata={"help": "compute embeddings and build the FAISS index"})
    dense_model: str | None = field(
        default=None, metadata={"help": "sentence-transformers document encoder (None: bundled all-MiniLM-L6-v2)"}
    )
    dense_doc_model: str | None = field(
        default=None, metadata={"help": "separate document encoder, as in the pipeline config (None: dense_model)"}
    )
    dense_max_seq_length: int | None = field(
        default=None, metadata={"help": "truncate documents to this many model tokens (None: the model's limit)"}
    )
    dense_batch_size: int = field(default=64, metadata={"help": "documents per encoder forward pass"})
    dense_workers: int = field(
        default=-1,
        metadata={"help": "processes that read and tokenize documents for the encoder (-1: auto, none on a CPU, on a "
                  "GPU every core but two up to 16; 0: none): tokenizing, not the GPU, limits one process"},
    )
    parallel_stages: bool = field(
        default=True,
        metadata={"help": "build the sparse index in a second process while the dense index is built"},
    )
    device: str = field(default="auto", metadata={"help": "encoder device: cpu, cuda or auto (fp16 on cuda)"})
    rows_per_shard: int = field(
        default=100_000, metadata={"help": "documents per embedding shard (the unit of resume)"}
    )
    factory: str = field(
        default="Flat",
        metadata={"help": "FAISS index factory string: Flat (exact; small corpora), IVF4096,PQ48, HNSW32, ..."},
    )
    train_size: int = field(
        default=200_000, metadata={"help": "vectors sampled (seeded) to train a trained index type (IVF, PQ)"}
    )
    nprobe: int | None = field(default=None, metadata={"help": "default IVF lists searched per question"})
    ef_search: int | None = field(default=None, metadata={"help": "default HNSW efSearch"})
    executor: str = field(
        default="local", metadata={"help": "local (this process) or ray (embedding shards on Ray Data actors)"}
    )
    ray_address: str | None = field(
        default=None, metadata={"help": "ray: cluster to join (default: $RAY_ADDRESS, else a local instance)"}
    )
    ray_actors: int = field(default=1, metadata={"help": "ray: embedding actors (one per GPU)"})
    ray_gpus_per_actor: float = field(default=0.0, metadata={"help": "ray: GPUs per embedding actor"})

    def __post_init__(self) -> None:
        if not (self.sparse or self.dense):
            raise ValueError("enable at least one of sparse and dense")
        if self.rows_per_shard < 1 or self.dense_batch_size < 1 or self.train_size < 1:
            raise ValueError("rows_per_shard, dense_batch_size and train_size must be >= 1")
        if self.dense_workers < -1:
            raise ValueError(f"dense_workers must be >= 0, or -1 (auto), not {self.dense_workers}")
        if self.sparse_heap_mb < 16 or self.sparse_commit_every < 1:
            raise ValueError("sparse_heap_mb must be >= 16 (tantivy's minimum is 15 MB) and sparse_commit_every >= 1")
        if not 1 <= self.sparse_parts <= 64 or self.sparse_heap_mb < 16 * self.sparse_parts:
            raise ValueError(f"sparse_parts must be 1..64 with sparse_heap_mb >= 16 per part, not {self.sparse_parts} "
                             f"parts with {self.sparse_heap_mb} MB")
        if self.executor not in ("local", "ray"):
            raise ValueError(f"executor must be local or ray, not '{self.executor}'")
        for name in ("nprobe", "ef_search"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device must be cpu, cuda or auto, not '{self.device}'")
