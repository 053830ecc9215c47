"""The index build's document encoder: sentence-transformers in this process, or DataLoader workers tokenizing
for it (real MiniLM, real worker processes on the CPU); the sparse index built in a second process beside the
dense one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest

from index.config import IndexConfig
from index.embedder import DocumentEmbedder, auto_workers
from index.index_build import build_index
from ragroute.rag.corpus import Document
from ragroute.rag.pipeline import PipelineConfig, RAGPipeline
from ragroute.rag.store import InMemoryCorpus

TEXTS = [f"Document {i}: {topic} in adults with chronic disease." for i, topic in enumerate(
    ["statins and LDL", "aspirin after infarction", "metformin and HbA1c", "asthma and budesonide",
     "malaria vaccine", "varenicline for smokers", "hip fracture surgery", "migraine and topiramate",
     "sepsis antibiotics", "vitamin D and bone"] * 3)]


def test_auto_workers_none_on_a_cpu_most_cores_on_a_gpu() -> None:
    assert auto_workers("cpu", cpus=64) == 0
    assert auto_workers("cuda", cpus=16) == 14
    assert auto_workers("cuda:0", cpus=64) == 16
    assert auto_workers("cuda", cpus=2) == 1
    with pytest.raises(ValueError, match="dense_workers"):
        IndexConfig(dense_workers=-2)


def test_tokenizing_workers_give_sentence_transformers_vectors_in_row_order() -> None:
    store = InMemoryCorpus([Document(f"d{i}", "", text) for i, text in enumerate(TEXTS)])
    chunks = [(0, 7), (7, 20), (20, len(TEXTS))]
    plain = DocumentEmbedder(IndexConfig(device="cpu", dense_batch_size=4, dense_workers=0))
    assert plain.workers == 0 and plain.texts_per_call == 4 * 16
    expected = plain(TEXTS)
    workers = DocumentEmbedder(IndexConfig(device="cpu", dense_batch_size=4, dense_workers=2))
    assert workers.workers == 2  # MiniLM's empty default prompts do not turn the workers off
    before = {p.pid for p in psutil.Process().children()}
    rows = workers.rows(store, chunks)
    got = [next(rows)]
    during = [p for p in psutil.Process().children() if p.pid not in before]
    assert len(during) == 2, "the rows were not tokenized by two DataLoader workers"
    got += list(rows)
    assert [(lo, hi) for lo, hi, _ in got] == chunks
    vectors = np.concatenate([v for _, _, v in got])
    assert vectors.shape == expected.shape == (len(TEXTS), plain.dim)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)  # the same fp32 model, in the rows' order
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    left = [p for p in psutil.Process().children() if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, "the DataLoader workers outlived the build's iteration"


def test_parallel_stages_build_the_same_indexes(tmp_path: Path, xml_file: Callable, article: Callable) -> None:
    import faiss

    from tests.index.test_index_build import TOPICS, make_store, top_ids

    store = make_store(tmp_path, xml_file, article)
    settings = dict(device="cpu", rows_per_shard=4, dense_batch_size=4, factory="Flat")
    for name, parallel in (("parallel", True), ("sequential", False)):
        manifest = build_index(store, tmp_path / name, IndexConfig(**settings, parallel_stages=parallel))
        assert manifest["state"] == "complete" and manifest["store_rows_indexed"] == len(TOPICS)
    a, b = (faiss.serialize_index(faiss.read_index(str(tmp_path / d / "dense.faiss"))) for d in ("parallel", "sequential"))
    np.testing.assert_array_equal(a, b)
    for name in ("parallel", "sequential"):
        bm25 = RAGPipeline.from_config(PipelineConfig(corpus=str(store), index=str(tmp_path / name), retriever="bm25",
                                                      reranker="none", retrieval_n=5, final_n=3))
        assert top_ids(bm25, "Does varenicline help smokers quit tobacco?")[0] == "1005"


def test_a_failing_sparse_process_fails_the_build_and_it_resumes(
    tmp_path: Path, xml_file: Callable, article: Callable
) -> None:
    from tests.index.test_index_build import make_store

    store = make_store(tmp_path, xml_file, article)
    out = tmp_path / "index"
    out.mkdir()
    (out / "sparse").write_text("not a directory")  # tantivy cannot open its index here: the second process fails
    cfg = IndexConfig(device="cpu", rows_per_shard=4, dense_batch_size=4, factory="Flat")
    with pytest.raises(Exception, match="sparse|directory|exist"):
        build_index(store, out, cfg)
    import json

    assert json.loads((out / "manifest.json").read_text())["state"] == "building"
    assert (out / "embeddings" / "shard_000002.done").is_file()  # the dense part finished and is kept
    (out / "sparse").unlink()
    assert build_index(store, out, cfg)["state"] == "complete"
