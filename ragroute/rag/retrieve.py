"""Retrievers behind one interface: BM25 (bm25s), dense (sentence-transformers) and hybrid (reciprocal-rank fusion).

A retriever maps a batch of questions to ranked :class:`Hit` lists (document position in the corpus + score).
Variants register in :data:`RETRIEVERS` under the name a config uses. The indexes they need live in an
:class:`IndexStore`, which builds each one at most once per corpus and settings (cached on disk) and shares it,
so the hybrid retriever and the bi-encoder reranker use one encoder and one embedding matrix.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ragroute.rag.cache import corpus_fingerprint, default_index_dir, index_key, load_or_build

if TYPE_CHECKING:
    from ragroute.rag.bm25 import BM25Index
    from ragroute.rag.config import PipelineConfig
    from ragroute.rag.corpus import Document
    from ragroute.rag.dense import DenseEncoder, DenseIndex


@dataclass
class Hit:
    """A document by its position in the corpus list, with the score of the stage that ranked it."""

    doc: int
    score: float


class Retriever(ABC):
    @abstractmethod
    def retrieve(self, queries: list[str], k: int) -> list[list[Hit]]:
        """The best ``k`` documents for every query, best first."""


class IndexStore:
    """The corpus and its lazily built, disk-cached indexes (one of each kind per store)."""

    def __init__(self, cfg: PipelineConfig, corpus: list[Document]) -> None:
        self.cfg = cfg
        self.corpus = corpus
        self.root = Path(cfg.index_dir).expanduser() if cfg.index_dir else default_index_dir()
        self._fingerprint: str | None = None
        self._bm25: BM25Index | None = None
        self._encoder: DenseEncoder | None = None
        self._dense: DenseIndex | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = corpus_fingerprint(self.corpus)
        return self._fingerprint

    def bm25(self) -> BM25Index:
        if self._bm25 is None:
            from ragroute.rag.bm25 import BM25Index, BM25Settings

            cfg = self.cfg
            settings = BM25Settings(
                k1=cfg.bm25_k1,
                b=cfg.bm25_b,
                method=cfg.bm25_method,
                stemmer=cfg.bm25_stemmer,
                stopwords=cfg.bm25_stopwords,
            )
            target = self.root / index_key("bm25", self.fingerprint, asdict(settings))

            def build(directory: Path) -> None:
                # Titles are indexed with the text: for most corpora they are the densest summary of the paper.
                texts = [f"{d.title}\n{d.text}" if d.title else d.text for d in self.corpus]
                BM25Index.build(texts, settings, backend=cfg.bm25_backend).save(directory)

            def load(directory: Path) -> BM25Index:
                index = BM25Index.load(directory, mmap=True, backend=cfg.bm25_backend)
                if index.n_docs != len(self.corpus):
                    raise ValueError(f"index has {index.n_docs} documents, corpus has {len(self.corpus)}")
                return index

            self._bm25 = load_or_build(target, build, load)
        return self._bm25

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

    def dense(self) -> DenseIndex:
        if self._dense is None:
            from ragroute.rag.dense import DenseIndex

            encoder = self.encoder()
            settings = {"doc_model": encoder.doc_model_name, "max_seq_length": encoder.max_seq_length}
            target = self.root / index_key("dense", self.fingerprint, settings)
            self._dense = load_or_build(
                target,
                lambda directory: DenseIndex.build(directory, self.corpus, encoder),
                lambda directory: DenseIndex.load(directory, encoder, len(self.corpus)),
            )
        return self._dense


def _hits(results: list[tuple[np.ndarray, np.ndarray]]) -> list[list[Hit]]:
    return [[Hit(int(d), float(s)) for d, s in zip(docs, scores, strict=True)] for docs, scores in results]


class BM25Retriever(Retriever):
    def __init__(self, index: BM25Index) -> None:
        self.index = index

    def retrieve(self, queries: list[str], k: int) -> list[list[Hit]]:
        return _hits(self.index.search(queries, k))


class DenseRetriever(Retriever):
    def __init__(self, index: DenseIndex) -> None:
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
    def __init__(self, parts: list[Retriever], weights: list[float], rrf_k: int) -> None:
        self.parts = parts
        self.weights = weights
        self.rrf_k = rrf_k

    def retrieve(self, queries: list[str], k: int) -> list[list[Hit]]:
        per_part = [part.retrieve(queries, k) for part in self.parts]
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


RETRIEVERS: dict[str, Callable[[PipelineConfig, IndexStore], Retriever]] = {
    "bm25": lambda cfg, store: BM25Retriever(store.bm25()),
    "dense": lambda cfg, store: DenseRetriever(store.dense()),
    "hybrid": _hybrid,
}


def register_retriever(name: str, factory: Callable[[PipelineConfig, IndexStore], Retriever]) -> None:
    """Make another retriever available to configs as ``retriever: NAME``."""
    RETRIEVERS[name] = factory


def create_retriever(cfg: PipelineConfig, store: IndexStore) -> Retriever:
    return RETRIEVERS[cfg.retriever](cfg, store)
