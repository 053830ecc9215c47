"""Rerankers behind one interface: none, bi-encoder (offline default), bm25-rrf and cross-encoder.

A reranker rescores each question's candidates and returns them best first, with its own score. The
bi-encoder reranker scores candidates by the cosine similarity of the dense embeddings the store already holds
(the question is encoded once, shared with dense retrieval), so it costs microseconds; a cross-encoder
(``cross-encoder/ms-marco-MiniLM-L-6-v2``, ``ncbi/MedCPT-Cross-Encoder``) reads question and document together
and is more accurate but runs a transformer over every pair. bm25-rrf gives BM25 its vote on dense candidates
without a BM25 search of the whole corpus: each candidate's BM25 score comes from the sparse index restricted to
the candidates, and their dense order and BM25 order are fused by reciprocal rank (the hybrid retriever's fusion,
over the candidates only). Over 10M documents on two cores that costs ~3 ms where the full BM25 search takes
40-50 ms (docs/benchmarks/retrieval.md section 3).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ragroute.rag.retrieve import Hit, IndexStore, reciprocal_rank_fusion
from ragroute.registry import Registry

if TYPE_CHECKING:
    from ragroute.rag.config import PipelineConfig


class Reranker(ABC):
    @abstractmethod
    def rerank(self, queries: list[str], candidates: list[list[Hit]]) -> list[list[Hit]]:
        """Rescore every query's candidates; each list comes back best first."""


def _sorted(hits: list[Hit]) -> list[Hit]:
    return sorted(hits, key=lambda h: -h.score)


class NoReranker(Reranker):
    def rerank(self, queries: list[str], candidates: list[list[Hit]]) -> list[list[Hit]]:
        return candidates


class BiEncoderReranker(Reranker):
    def __init__(self, store: IndexStore) -> None:
        self.index = store.dense()

    def rerank(self, queries: list[str], candidates: list[list[Hit]]) -> list[list[Hit]]:
        query_vectors = self.index.encoder.encode_queries(queries)
        out = []
        for vector, hits in zip(query_vectors, candidates, strict=True):
            if not hits:
                out.append([])
                continue
            scores = self.index.similarities(vector[None, :], [h.doc for h in hits])[0]
            out.append(_sorted([Hit(h.doc, float(s)) for h, s in zip(hits, scores, strict=True)]))
        return out


class BM25FusionReranker(Reranker):
    """The candidates in their retrieval order fused with their BM25 order among themselves (those sharing no
    term with the question have no BM25 rank), as ``sum weight / (rrf_k + rank)``."""

    def __init__(self, store: IndexStore, rrf_k: int, bm25_weight: float, retrieval_weight: float) -> None:
        self.index = store.bm25()
        self.rrf_k = rrf_k
        self.weights = [retrieval_weight, bm25_weight]

    def rerank(self, queries: list[str], candidates: list[list[Hit]]) -> list[list[Hit]]:
        out = []
        for query, hits in zip(queries, candidates, strict=True):
            scores = self.index.candidate_scores(query, np.asarray([h.doc for h in hits], np.int64))
            by_bm25 = [hits[i] for i in np.argsort(-scores, kind="stable") if scores[i] > 0]
            out.append(reciprocal_rank_fusion([hits, by_bm25], self.weights, self.rrf_k))
        return out


class CrossEncoderReranker(Reranker):
    def __init__(self, store: IndexStore, model: str, device: str, batch_size: int) -> None:
        from sentence_transformers import CrossEncoder

        from ragroute.models import hub_error
        from ragroute.rag.dense import document_text, resolve_device

        try:
            self.model: Any = CrossEncoder(model, device=resolve_device(device))
        except OSError as exc:
            raise hub_error(model, exc) from None
        self.corpus = store.corpus  # documents are read by position when scored (a store is not held in memory)
        self.document_text = document_text
        self.batch_size = batch_size

    def _text(self, pos: int) -> str:
        doc = self.corpus.document(pos)
        return self.document_text(doc.title, doc.text)

    def rerank(self, queries: list[str], candidates: list[list[Hit]]) -> list[list[Hit]]:
        # One predict call for the whole batch: the pairs of all questions share forward passes.
        pairs = [(q, self._text(h.doc)) for q, hits in zip(queries, candidates, strict=True) for h in hits]
        if not pairs:
            return [[] for _ in queries]
        scores = iter(
            self.model.predict(
                pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
            )
        )
        return [_sorted([Hit(h.doc, float(next(scores))) for h in hits]) for hits in candidates]


def _cross_encoder(cfg: PipelineConfig, store: IndexStore) -> Reranker:
    from ragroute.rag.config import DEFAULT_CROSS_ENCODER

    return CrossEncoderReranker(
        store, cfg.reranker_model or DEFAULT_CROSS_ENCODER, cfg.device, cfg.dense_batch_size
    )


RERANKERS: Registry[Callable[[PipelineConfig, IndexStore], Reranker]] = Registry("reranker", {
    "none": lambda cfg, store: NoReranker(),
    "bi-encoder": lambda cfg, store: BiEncoderReranker(store),
    "bm25-rrf": lambda cfg, store: BM25FusionReranker(store, cfg.rrf_k, cfg.rrf_bm25_weight, cfg.rrf_dense_weight),
    "cross-encoder": _cross_encoder,
})


def register_reranker(name: str, factory: Callable[[PipelineConfig, IndexStore], Reranker]) -> None:
    """Make another reranker available to configs as ``reranker: NAME``."""
    RERANKERS[name] = factory


def create_reranker(cfg: PipelineConfig, store: IndexStore) -> Reranker:
    return RERANKERS[cfg.reranker](cfg, store)
