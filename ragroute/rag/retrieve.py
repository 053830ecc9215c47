"""Retrievers behind one interface: BM25 (bm25s), dense (sentence-transformers) and hybrid (reciprocal-rank fusion).

A retriever maps a batch of questions to ranked :class:`Hit` lists (document position in the corpus + score).
Variants register in :data:`RETRIEVERS` under the name a config uses. The indexes they need live in an
:class:`IndexStore`, which builds each one at most once per corpus and settings (cached on disk) and shares it,
so the hybrid retriever and the bi-encoder reranker use one encoder and one embedding matrix.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragroute.errors import UserError
from ragroute.rag.cache import corpus_fingerprint, default_index_dir, index_key, load_or_build
from ragroute.registry import Registry

if TYPE_CHECKING:
    from ragroute.rag.ann import AnnIndex
    from ragroute.rag.bm25 import BM25Index
    from ragroute.rag.config import PipelineConfig
    from ragroute.rag.corpus import Document
    from ragroute.rag.dense import DenseEncoder, DenseIndex
    from ragroute.rag.sparse import TantivyBM25
    from ragroute.rag.store import CorpusReader


@dataclass
class Hit:
    """A document by its position in the corpus list, with the score of the stage that ranked it."""

    doc: int
    score: float


class Retriever(ABC):
    @abstractmethod
    def retrieve(self, queries: list[str], k: int) -> list[list[Hit]]:
        """The best ``k`` documents for every query, best first."""


def as_corpus(corpus: Any) -> CorpusReader:
    """A list of documents as an :class:`InMemoryCorpus`; a store (or another reader) as it is."""
    from ragroute.rag.store import InMemoryCorpus

    return InMemoryCorpus(corpus) if isinstance(corpus, list) else corpus


class IndexStore:
    """The corpus and its indexes (one of each kind per store): those of ``cfg.index`` when set (built by
    ``ragroute index build``, checked against the store's manifest), else built on first use and cached on disk
    (small corpora only: above ``cfg.implicit_index_max_docs`` documents that is a UserError)."""

    def __init__(self, cfg: PipelineConfig, corpus: list[Document] | CorpusReader) -> None:
        self.cfg = cfg
        self.corpus = as_corpus(corpus)
        self.root = Path(cfg.index_dir).expanduser() if cfg.index_dir else default_index_dir()
        self._fingerprint: str | None = None
        self._bm25: BM25Index | TantivyBM25 | None = None
        self._encoder: DenseEncoder | None = None
        self._dense: DenseIndex | AnnIndex | None = None
        self.built: dict[str, Any] | None = None  # the index manifest of cfg.index
        self.live: np.ndarray | None = None  # the store's live rows (built indexes hold dead rows too)
        if cfg.index:
            self._open_built(cfg.index)

    def _open_built(self, directory: str) -> None:
        from ragroute.rag.built_index import check_index, doc_model_label, read_index_manifest

        if getattr(self.corpus, "directory", None) is None:
            raise UserError(f"index {directory} is set, but the corpus is not a corpus store: set corpus to the store "
                            "directory the index was built from (`ragroute corpus build`)")
        manifest = read_index_manifest(directory)
        doc_model = doc_model_label(self.cfg.dense_model, self.cfg.dense_doc_model)
        check_index(directory, manifest, self.corpus.fingerprint, getattr(self.corpus, "directory", None), doc_model)
        if manifest["store_rows_indexed"] != len(self.corpus):
            raise UserError(f"the index in {directory} covers {manifest['store_rows_indexed']} rows, the store has "
                            f"{len(self.corpus)}: run `ragroute index update`")
        self.built = manifest
        live = self.corpus.live_mask()
        self.live = None if live.all() else live

    @property
    def fingerprint(self) -> str:
        """The key of the implicit index cache: a store's own fingerprint; for documents held in memory the
        content hash the cache has always used (so existing caches stay valid)."""
        if self._fingerprint is None:
            docs = getattr(self.corpus, "docs", None)
            self._fingerprint = corpus_fingerprint(docs) if docs is not None else self.corpus.fingerprint
        return self._fingerprint

    def _implicit(self, what: str) -> None:
        """Refuse to build ``what`` as a side effect for a large corpus."""
        if len(self.corpus) > self.cfg.implicit_index_max_docs:
            raise UserError(
                f"the corpus has {len(self.corpus):,} documents: building its {what} on first use is limited to "
                f"{self.cfg.implicit_index_max_docs:,} (implicit_index_max_docs). Build the indexes once with "
                "`ragroute corpus build` + `ragroute index build` and set the pipeline's corpus (the store) and "
                "index"
            )

    def _built_part(self, part: str) -> dict[str, Any]:
        assert self.built is not None
        settings = self.built.get(part)
        if not settings:
            raise UserError(f"the index {self.cfg.index} has no {part} index (retriever {self.cfg.retriever!r}, "
                            f"reranker {self.cfg.reranker!r}); rebuild it with {part} enabled")
        return settings

    def bm25(self) -> BM25Index | TantivyBM25:
        if self._bm25 is None:
            self._bm25 = self._open_sparse() if self.built else self._cached_bm25()
        return self._bm25

    def _open_sparse(self) -> TantivyBM25:
        from ragroute.rag.built_index import SPARSE_DIR
        from ragroute.rag.sparse import AnalyzerSettings, TantivyBM25

        settings = self._built_part("sparse")
        analyzer = AnalyzerSettings(stemmer=settings["stemmer"], stopwords=settings["stopwords"])
        return TantivyBM25(Path(self.cfg.index) / SPARSE_DIR, analyzer, live=self.live, parts=settings.get("parts", 1))

    def _cached_bm25(self) -> BM25Index:
        from ragroute.rag.bm25 import BM25Index, BM25Settings

        cfg = self.cfg
        settings = BM25Settings(
            k1=cfg.bm25_k1, b=cfg.bm25_b, method=cfg.bm25_method, stemmer=cfg.bm25_stemmer, stopwords=cfg.bm25_stopwords
        )
        target = self.root / index_key("bm25", self.fingerprint, asdict(settings))

        def build(directory: Path) -> None:
            self._implicit("BM25 index")
            texts = [t for _, _, batch in self.corpus.iter_texts() for t in batch]
            BM25Index.build(texts, settings, backend=cfg.bm25_backend).save(directory)

        def load(directory: Path) -> BM25Index:
            index = BM25Index.load(directory, mmap=True, backend=cfg.bm25_backend)
            if index.n_docs != len(self.corpus):
                raise ValueError(f"index has {index.n_docs} documents, corpus has {len(self.corpus)}")
            return index

        return load_or_build(target, build, load)

    def encoder(self) -> DenseEncoder:
        if self._encoder is None:
            from ragroute.rag.dense import DenseEncoder

            cfg = self.cfg
            self._encoder = DenseEncoder(
                cfg.dense_model,
                cfg.dense_doc_model,
                cfg.device,
                cfg.dense_batch_size,
                cfg.dense_max_seq_length,
                cfg.query_threads,
                cfg.query_quantization,
            )
        return self._encoder

    def dense(self) -> DenseIndex | AnnIndex:
        if self._dense is None:
            self._dense = self._open_dense() if self.built else self._cached_dense()
        return self._dense

    def _open_dense(self) -> AnnIndex:
        from ragroute.rag.ann import AnnIndex
        from ragroute.rag.shards import EMBEDDINGS_DIR, EmbeddingShards

        settings = self._built_part("dense")
        directory = Path(self.cfg.index)
        shards = EmbeddingShards(directory / EMBEDDINGS_DIR, self.built["store_rows_indexed"])
        return AnnIndex(
            directory, self.encoder(), shards, live=self.live,
            nprobe=self.cfg.nprobe or settings.get("nprobe"), ef_search=self.cfg.ef_search or settings.get("ef_search"),
            refine_k=self.cfg.refine_k,
        )

    def _cached_dense(self) -> DenseIndex:
        from ragroute.rag.dense import DenseIndex

        encoder = self.encoder()
        settings = {"doc_model": encoder.doc_model_name, "max_seq_length": encoder.max_seq_length}
        target = self.root / index_key("dense", self.fingerprint, settings)

        def build(directory: Path) -> None:
            self._implicit("document embeddings")
            DenseIndex.build(directory, self.corpus.documents(range(len(self.corpus))), encoder)

        return load_or_build(target, build, lambda directory: DenseIndex.load(directory, encoder, len(self.corpus)))


def _hits(results: list[tuple[np.ndarray, np.ndarray]]) -> list[list[Hit]]:
    return [[Hit(int(d), float(s)) for d, s in zip(docs, scores, strict=True)] for docs, scores in results]


class BM25Retriever(Retriever):
    def __init__(self, index: BM25Index | TantivyBM25) -> None:
        self.index = index

    def retrieve(self, queries: list[str], k: int) -> list[list[Hit]]:
        return _hits(self.index.search(queries, k))


class DenseRetriever(Retriever):
    def __init__(self, index: DenseIndex | AnnIndex) -> None:
        self.index = index

    def retrieve(self, queries: list[str], k: int) -> list[list[Hit]]:
        return _hits(self.index.search(queries, k))


def reciprocal_rank_fusion(rankings: list[list[Hit]], weights: list[float], k: int = 60) -> list[Hit]:
    """Merge rankings by sum of ``weight / (k + rank)`` (rank from 1), best first (Cormack et al., 2009).

    Ranks, not raw scores, are combined, so BM25 scores and cosine similarities need no calibration."""
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, hit in enumerate(ranking, start=1):
            fused[hit.doc] = fused.get(hit.doc, 0.0) + weight / (k + rank)
    return [Hit(doc, score) for doc, score in sorted(fused.items(), key=lambda item: (-item[1], item[0]))]


class HybridRetriever(Retriever):
    """Every part retrieves at the same time (tantivy, FAISS and torch release the GIL while they search and
    encode), so over a large corpus a question waits for the slowest part, not for the sum of them."""

    def __init__(self, parts: list[Retriever], weights: list[float], rrf_k: int) -> None:
        self.parts = parts
        self.weights = weights
        self.rrf_k = rrf_k
        self._pool: ThreadPoolExecutor | None = None

    def _parts_retrieve(self, queries: list[str], k: int) -> list[list[list[Hit]]]:
        """The first part in this thread, the others in the pool at the same time."""
        if self._pool is None and len(self.parts) > 1:
            self._pool = ThreadPoolExecutor(max_workers=4 * len(self.parts), thread_name_prefix="hybrid")
        others = [self._pool.submit(part.retrieve, queries, k) for part in self.parts[1:]] if self._pool else []
        first = self.parts[0].retrieve(queries, k)
        return [first, *(future.result() for future in others)]

    def retrieve(self, queries: list[str], k: int) -> list[list[Hit]]:
        per_part = self._parts_retrieve(queries, k)
        return [
            reciprocal_rank_fusion([ranking[i] for ranking in per_part], self.weights, self.rrf_k)[:k]
            for i in range(len(queries))
        ]


def _hybrid(cfg: PipelineConfig, store: IndexStore) -> Retriever:
    return HybridRetriever(
        [BM25Retriever(store.bm25()), DenseRetriever(store.dense())],
        [cfg.rrf_bm25_weight, cfg.rrf_dense_weight],
        cfg.rrf_k,
    )


RETRIEVERS: Registry[Callable[[PipelineConfig, IndexStore], Retriever]] = Registry("retriever", {
    "bm25": lambda cfg, store: BM25Retriever(store.bm25()),
    "dense": lambda cfg, store: DenseRetriever(store.dense()),
    "hybrid": _hybrid,
})


def register_retriever(name: str, factory: Callable[[PipelineConfig, IndexStore], Retriever]) -> None:
    """Make another retriever available to configs as ``retriever: NAME``."""
    RETRIEVERS[name] = factory


def create_retriever(cfg: PipelineConfig, store: IndexStore) -> Retriever:
    return RETRIEVERS[cfg.retriever](cfg, store)
