"""The index build's document encoder: one process, or sentence-transformers' multi-process pool (real MiniLM,
real worker processes on the CPU), and the sparse index built in a second process beside the dense one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest

from index.config import IndexConfig
from index.embedder import DocumentEmbedder, auto_processes
from index.index_build import build_index
from ragroute.rag.pipeline import PipelineConfig, RAGPipeline

TEXTS = [f"Document {i}: {topic} in adults with chronic disease." for i, topic in enumerate(
    ["statins and LDL", "aspirin after infarction", "metformin and HbA1c", "asthma and budesonide",
     "malaria vaccine", "varenicline for smokers", "hip fracture surgery", "migraine and topiramate",
     "sepsis antibiotics", "vitamin D and bone"] * 3)]


def test_auto_processes_one_on_a_cpu_several_per_gpu() -> None:
    assert auto_processes("cpu", cpus=64) == 1
    assert auto_processes("cuda", cpus=16) == 8
    assert auto_processes("cuda:0", cpus=64) == 8
    assert auto_processes("cuda", cpus=2) == 1
    with pytest.raises(ValueError, match="dense_processes"):
        IndexConfig(dense_processes=-1)


@pytest.mark.slow  # two spawned encoder processes load torch and MiniLM: ~40 s on 2 cores
def test_a_pool_of_encoder_processes_gives_the_single_process_vectors() -> None:
    one = DocumentEmbedder(IndexConfig(device="cpu", dense_batch_size=4))
    assert one.processes == 1 and one.texts_per_call == 4 * 16
    expected = one(TEXTS)
    with DocumentEmbedder(IndexConfig(device="cpu", dense_batch_size=4, dense_processes=2)) as pooled:
        assert pooled.texts_per_call == 4 * 16 * 2
        got = pooled(TEXTS)
        workers = [p for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) >= 2
    assert got.shape == expected.shape == (len(TEXTS), one.dim)
    np.testing.assert_allclose(got, expected, atol=1e-5)  # same fp32 model, rows in the caller's order
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    psutil.wait_procs(workers, timeout=30)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers), "pool not stopped"


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
