"""Dense and hybrid retrieval over the demo corpus with the bundled MiniLM, and reciprocal-rank fusion."""

from __future__ import annotations

import numpy as np

from ragroute.rag.corpus import Document, QAItem
from ragroute.rag.retrieve import BM25Retriever, DenseRetriever, Hit, HybridRetriever, reciprocal_rank_fusion


def _top1_accuracy(retriever, corpus: list[Document], questions: list[QAItem]) -> float:
    rankings = retriever.retrieve([q.question for q in questions], 5)
    return float(
        np.mean(
            [
                bool(r) and corpus[r[0].doc].id == q.gold_doc_id
                for r, q in zip(rankings, questions, strict=True)
            ]
        )
    )


def test_dense_retrieval_finds_the_demo_document(demo_pipeline, demo_corpus, demo_questions):
    dense = DenseRetriever(demo_pipeline.store.dense())
    hits = dense.retrieve(["Which insect transmits the malaria parasite?"], 3)[0]
    assert demo_corpus[hits[0].doc].id == "DEMO-003"
    assert all(-1.0 <= h.score <= 1.0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert _top1_accuracy(dense, demo_corpus, demo_questions) >= 0.9


def test_dense_retrieval_matches_meaning_without_shared_words(demo_pipeline, demo_corpus):
    """'bug that carries the fever' shares no term with the malaria abstract's key words; BM25 cannot match it."""
    question = "bug that carries the fever from person to person at night"
    dense_hits = DenseRetriever(demo_pipeline.store.dense()).retrieve([question], 3)[0]
    assert "DEMO-003" in [demo_corpus[h.doc].id for h in dense_hits]


def test_hybrid_retrieval_is_at_least_as_good_as_each_part(demo_pipeline, demo_corpus, demo_questions):
    store = demo_pipeline.store
    bm25, dense = BM25Retriever(store.bm25()), DenseRetriever(store.dense())
    hybrid = HybridRetriever([bm25, dense], [1.0, 1.0], rrf_k=60)
    hits = hybrid.retrieve(["Do statins reduce LDL cholesterol and heart attacks?"], 5)[0]
    assert demo_corpus[hits[0].doc].id == "DEMO-001"
    assert len({h.doc for h in hits}) == len(hits) <= 5
    hybrid_acc = _top1_accuracy(hybrid, demo_corpus, demo_questions)
    assert hybrid_acc >= 0.95
    assert hybrid_acc >= min(
        _top1_accuracy(bm25, demo_corpus, demo_questions), _top1_accuracy(dense, demo_corpus, demo_questions)
    )


def test_hybrid_parts_search_at_the_same_time_and_fuse_as_one_after_the_other(demo_pipeline, demo_questions):
    import threading

    store = demo_pipeline.store
    bm25, dense = BM25Retriever(store.bm25()), DenseRetriever(store.dense())
    both_running, threads = threading.Barrier(2, timeout=30), set()

    class MeetingDense(DenseRetriever):  # goes on only once the BM25 part is searching too
        def retrieve(self, queries, k):
            threads.add(threading.get_ident())
            both_running.wait()
            return super().retrieve(queries, k)

    class MeetingBM25(BM25Retriever):
        def retrieve(self, queries, k):
            threads.add(threading.get_ident())
            both_running.wait()
            return super().retrieve(queries, k)

    questions = [q.question for q in demo_questions[:6]]
    got = HybridRetriever([MeetingBM25(bm25.index), MeetingDense(dense.index)], [1.0, 0.5], rrf_k=60).retrieve(questions, 5)
    assert len(threads) == 2  # a sequential hybrid would wait at the barrier until it times out
    parts = [bm25.retrieve(questions, 5), dense.retrieve(questions, 5)]
    assert got == [reciprocal_rank_fusion([p[i] for p in parts], [1.0, 0.5], 60)[:5] for i in range(len(questions))]


def test_reciprocal_rank_fusion_rewards_agreement():
    bm25 = [Hit(1, 12.0), Hit(2, 9.0), Hit(3, 1.0)]
    dense = [Hit(2, 0.9), Hit(4, 0.8), Hit(1, 0.1)]
    fused = reciprocal_rank_fusion([bm25, dense], [1.0, 1.0], k=60)
    assert [h.doc for h in fused] == [
        2,
        1,
        4,
        3,
    ]  # 2: ranks 2+1, 1: ranks 1+3, 4: rank 2 only, 3: rank 3 only
    assert fused[0].score == 1 / 62 + 1 / 61
    # Weights shift the balance: trusting only dense puts its order first.
    only_dense = reciprocal_rank_fusion([bm25, dense], [0.0, 1.0], k=60)
    assert [h.doc for h in only_dense][:3] == [2, 4, 1]


def test_dense_index_is_cached_and_memory_mapped(demo_pipeline, demo_index_dir):
    index = demo_pipeline.store.dense()
    assert isinstance(index.embeddings, np.memmap)
    assert index.embeddings.shape[0] == len(demo_pipeline.corpus)
    assert np.allclose(np.linalg.norm(np.asarray(index.embeddings), axis=1), 1.0, atol=1e-4)
    assert any(p.name.startswith("dense-") for p in demo_index_dir.iterdir())


def test_query_encoding_uses_one_thread_and_restores_torch_setting_across_threads(demo_pipeline):
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from ragroute.rag.dense import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before

    encoder = demo_pipeline.store.encoder()
    questions = [f"Does treatment {i} lower blood pressure in adults?" for i in range(12)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda q: encoder.encode_queries([q])[0], questions))
    assert torch.get_num_threads() == before
    encoder._cache.clear()
    one_by_one = [encoder.encode_queries([q])[0] for q in questions]
    np.testing.assert_allclose(np.stack(concurrent), np.stack(one_by_one), atol=1e-5)


def test_int8_query_encoder_agrees_with_float32(demo_pipeline, demo_questions):
    import torch

    from ragroute.rag.dense import DenseEncoder

    quantized = demo_pipeline.store.encoder()
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized._query_model.modules())
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.doc_model.modules())
    float32 = DenseEncoder(query_quantization="none")
    questions = [q.question for q in demo_questions]
    int8_vectors, float_vectors = quantized.encode_queries(questions), float32.encode_queries(questions)
    assert np.sum(int8_vectors * float_vectors, axis=1).min() > 0.9
    # What matters: both rank the same document first for (nearly) every question.
    index = demo_pipeline.store.dense()
    top_int8 = np.argmax(index.similarities(int8_vectors), axis=1)
    top_float = np.argmax(index.similarities(float_vectors), axis=1)
    assert np.mean(top_int8 == top_float) >= 0.95
