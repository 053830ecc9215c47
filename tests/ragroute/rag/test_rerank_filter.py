"""Rerankers (none, bi-encoder, bm25-rrf, cross-encoder) and the filter stage (dedup, min score, final_n)."""

from __future__ import annotations

import numpy as np
import pytest

from ragroute.errors import UserError
from ragroute.rag.config import PipelineConfig
from ragroute.rag.corpus import Document
from ragroute.rag.filter import DuplicateKeys, filter_hits
from ragroute.rag.rerank import (
    BiEncoderReranker,
    BM25FusionReranker,
    CrossEncoderReranker,
    NoReranker,
    create_reranker,
)
from ragroute.rag.retrieve import Hit


def test_bi_encoder_puts_the_matching_document_first(demo_pipeline, demo_corpus):
    position = {d.id: i for i, d in enumerate(demo_corpus)}
    candidates = [Hit(position[i], 100.0 - n) for n, i in enumerate(["DEMO-001", "DEMO-002", "DEMO-003"])]
    reranker = BiEncoderReranker(demo_pipeline.store)
    (reranked,) = reranker.rerank(["Which mosquito transmits malaria?"], [candidates])
    assert demo_corpus[reranked[0].doc].id == "DEMO-003"
    assert sorted(h.doc for h in reranked) == sorted(h.doc for h in candidates)
    assert [h.score for h in reranked] == sorted((h.score for h in reranked), reverse=True)
    # The scores are the cosine similarities of the cached embeddings.
    encoder = demo_pipeline.store.encoder()
    query = encoder.encode_queries(["Which mosquito transmits malaria?"])[0]
    expected = float(np.asarray(demo_pipeline.store.dense().embeddings[reranked[0].doc]) @ query)
    assert reranked[0].score == pytest.approx(expected, abs=1e-5)


def test_no_reranker_keeps_order_and_empty_candidates_stay_empty(demo_pipeline):
    hits = [Hit(3, 1.0), Hit(1, 5.0)]
    assert NoReranker().rerank(["q"], [hits]) == [hits]
    assert BiEncoderReranker(demo_pipeline.store).rerank(["q"], [[]]) == [[]]


def test_bm25_rrf_fuses_the_retrieval_order_with_the_candidates_bm25_order(demo_pipeline, demo_corpus):
    position = {d.id: i for i, d in enumerate(demo_corpus)}
    question = "Which mosquito transmits malaria?"
    index = demo_pipeline.store.bm25()
    matching = dict(zip(*(a.tolist() for a in index.search([question], len(demo_corpus))[0]), strict=True))
    unrelated = [i for i in range(len(demo_corpus)) if i not in matching][:2]
    # The retrieval order puts two documents without a query term first and the malaria one third.
    candidates = [Hit(unrelated[0], 0.9), Hit(unrelated[1], 0.8), Hit(position["DEMO-003"], 0.7)]
    scores = index.candidate_scores(question, np.asarray([h.doc for h in candidates]))
    assert scores.tolist() == pytest.approx([0.0, 0.0, matching[position["DEMO-003"]]])

    reranker = BM25FusionReranker(demo_pipeline.store, rrf_k=60, bm25_weight=1.0, retrieval_weight=1.0)
    (fused,) = reranker.rerank([question], [candidates])
    assert [h.doc for h in fused] == [position["DEMO-003"], unrelated[0], unrelated[1]]
    # Its BM25 vote (rank 1 of the one matching candidate) plus its retrieval vote (rank 3); the others' retrieval
    # votes only.
    assert [h.score for h in fused] == pytest.approx([1 / 61 + 1 / 63, 1 / 61, 1 / 62])
    without_bm25 = BM25FusionReranker(demo_pipeline.store, rrf_k=60, bm25_weight=0.0, retrieval_weight=1.0)
    assert [h.doc for h in without_bm25.rerank([question], [candidates])[0]] == [h.doc for h in candidates]
    assert reranker.rerank([question, "malaria"], [[], []]) == [[], []]


def test_bm25_rrf_needs_dense_candidates():
    with pytest.raises(ValueError, match="bm25-rrf.*retriever 'hybrid'.*use retriever dense"):
        PipelineConfig(retriever="hybrid", reranker="bm25-rrf")
    assert PipelineConfig(retriever="dense", reranker="bm25-rrf").reranker == "bm25-rrf"


def test_cross_encoder_reranks_by_its_own_scores(demo_pipeline, demo_corpus):
    """A real CrossEncoder (MiniLM with a fresh classification head: offline, arbitrary but deterministic scores)."""
    from ragroute.rag.dense import default_dense_model

    reranker = CrossEncoderReranker(demo_pipeline.store, default_dense_model(), "cpu", batch_size=8)
    questions = ["Do statins lower LDL?", "What causes scurvy?"]
    candidates = [[Hit(0, 3.0), Hit(1, 2.0), Hit(2, 1.0)], [Hit(5, 1.0), Hit(4, 0.5)]]
    reranked = reranker.rerank(questions, candidates)
    for question, before, after in zip(questions, candidates, reranked, strict=True):
        pairs = [(question, f"{demo_corpus[h.doc].title}. {demo_corpus[h.doc].text}") for h in before]
        scores = reranker.model.predict(pairs, show_progress_bar=False)
        expected = sorted(zip([h.doc for h in before], scores, strict=True), key=lambda x: -x[1])
        assert [h.doc for h in after] == [d for d, _ in expected]
        np.testing.assert_allclose([h.score for h in after], [s for _, s in expected], rtol=1e-4, atol=1e-5)


def test_cross_encoder_name_missing_offline_is_a_user_error(demo_pipeline):
    cfg = PipelineConfig(reranker="cross-encoder", reranker_model="no-such-org/no-such-cross-encoder")
    with pytest.raises(UserError, match="no-such-cross-encoder"):
        create_reranker(cfg, demo_pipeline.store)


CORPUS = [
    Document("A", "", "Aspirin lowers the risk of stroke."),
    Document("B", "", "aspirin  lowers the risk\nof STROKE."),  # same text, other case and spacing
    Document("C", "", "Statins lower LDL cholesterol."),
    Document("D", "", "Malaria is spread by mosquitoes."),
    Document("E", "", "Scurvy comes from vitamin C deficiency."),
]


def test_filter_removes_duplicates_keeping_the_better_ranked():
    hits = [Hit(1, 0.9), Hit(0, 0.8), Hit(2, 0.7)]
    kept = filter_hits(hits, DuplicateKeys(CORPUS), final_n=10, dedup=True)
    assert [h.doc for h in kept] == [1, 2]
    assert [h.doc for h in filter_hits(hits, DuplicateKeys(CORPUS), final_n=10, dedup=False)] == [1, 0, 2]


def test_filter_min_score_and_final_n():
    hits = [Hit(2, 0.9), Hit(3, 0.5), Hit(4, 0.45), Hit(0, 0.2)]
    assert [h.doc for h in filter_hits(hits, DuplicateKeys(CORPUS), final_n=10, min_score=0.45)] == [2, 3, 4]
    assert [h.doc for h in filter_hits(hits, DuplicateKeys(CORPUS), final_n=2)] == [2, 3]
    assert filter_hits(hits, DuplicateKeys(CORPUS), final_n=3, min_score=1.0) == []


def test_pipeline_applies_rerank_depth_min_score_and_final_n(demo_corpus, demo_index_dir):
    from ragroute.rag.pipeline import RAGPipeline

    cfg = PipelineConfig(
        retriever="bm25",
        reranker="bi-encoder",
        retrieval_n=20,
        rerank_depth=8,
        final_n=5,
        min_score=0.3,
        index_dir=str(demo_index_dir),
    )
    prepared = RAGPipeline(cfg, demo_corpus).prepare("Does HPV vaccination prevent cervical cancer?")
    assert 1 <= len(prepared.docs) <= 5
    assert all(d.score >= 0.3 for d in prepared.docs)
    assert prepared.docs[0].id == "DEMO-006"


def test_retriever_and_reranker_share_one_dense_index(demo_pipeline):
    store = demo_pipeline.store
    assert demo_pipeline.reranker.index is store.dense() is store.dense()
    assert store.encoder() is store.dense().encoder
    assert demo_pipeline.retriever.parts[1].index is store.dense()
