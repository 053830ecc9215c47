"""The bm25s index: built, saved, loaded memory-mapped, and searched like the in-memory original."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ragroute.rag.bm25 import BM25Index, BM25Settings
from ragroute.rag.corpus import Document, QAItem, load_corpus


def test_save_and_memory_mapped_load_round_trip(
    tmp_path: Path, demo_corpus: list[Document], demo_questions: list[QAItem]
):
    built = BM25Index.build([d.text for d in demo_corpus], BM25Settings())
    built.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25", mmap=True)

    assert isinstance(loaded.model.scores["data"], np.memmap)
    assert isinstance(loaded.model.scores["indices"], np.memmap)
    assert loaded.n_docs == len(demo_corpus)
    assert loaded.settings == built.settings
    questions = [q.question for q in demo_questions]
    for (docs_a, scores_a), (docs_b, scores_b) in zip(
        built.search(questions, 5), loaded.search(questions, 5), strict=True
    ):
        np.testing.assert_array_equal(docs_a, docs_b)
        np.testing.assert_allclose(scores_a, scores_b)


def test_settings_are_stored_with_the_index(tmp_path: Path, demo_corpus: list[Document]):
    settings = BM25Settings(k1=0.9, b=0.4, stemmer="none", stopwords="none")
    BM25Index.build([d.text for d in demo_corpus], settings).save(tmp_path)
    loaded = BM25Index.load(tmp_path)
    assert loaded.settings == settings
    assert loaded.model.k1 == 0.9 and loaded.model.b == 0.4
    assert "the" in loaded.vocab  # no stop-word removal
    assert "vaccination" in loaded.vocab  # no stemming (english would give "vaccin")


def test_stemming_matches_inflected_query_terms(demo_corpus: list[Document]):
    texts = [
        "Vaccinated children had fewer infections.",
        "Statins lower cholesterol.",
        "Malaria spreads by mosquitoes.",
    ]
    stemmed = BM25Index.build(texts, BM25Settings(stemmer="english"))
    plain = BM25Index.build(texts, BM25Settings(stemmer="none"))
    docs, _ = stemmed.search(["does vaccination prevent infection"], 3)[0]
    assert docs[0] == 0
    docs, _ = plain.search(["does vaccination prevent infection"], 3)[0]
    assert len(docs) == 0  # no exact word in common


def test_queries_without_known_terms_find_nothing_and_k_is_clamped(demo_corpus: list[Document]):
    index = BM25Index.build([d.text for d in demo_corpus], BM25Settings())
    results = index.search(["the of and", "zzqx wibble", "statin LDL cholesterol"], k=1000)
    assert [len(docs) for docs, _ in results[:2]] == [0, 0]
    docs, scores = results[2]
    assert 0 < len(docs) <= len(demo_corpus)
    assert np.all(scores > 0) and np.all(np.diff(scores) <= 0)
    assert demo_corpus[int(docs[0])].id == "DEMO-001"


def test_pubmedqa_questions_find_their_own_abstract(pqal_dev_path: Path):
    from ragroute.rag.corpus import load_questions

    docs = load_corpus(str(pqal_dev_path))
    position = {d.id: i for i, d in enumerate(docs)}
    questions = load_questions(str(pqal_dev_path)).items
    index = BM25Index.build([d.text for d in docs], BM25Settings())
    results = index.search([q.question for q in questions], 10)
    at_1 = np.mean(
        [
            len(r[0]) > 0 and r[0][0] == position[q.gold_doc_id]
            for r, q in zip(results, questions, strict=True)
        ]
    )
    at_10 = np.mean([position[q.gold_doc_id] in r[0] for r, q in zip(results, questions, strict=True)])
    assert at_1 >= 0.9 and at_10 >= 0.98
