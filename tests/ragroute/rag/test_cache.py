"""Index cache: content-addressed, reused across pipelines, rebuilt when corrupted, never half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragroute.rag.cache import corpus_fingerprint, index_key, load_or_build
from ragroute.rag.config import PipelineConfig
from ragroute.rag.corpus import Document
from ragroute.rag.retrieve import IndexStore

DOCS = [
    Document("D1", "Aspirin", "Aspirin lowers the risk of a second heart attack."),
    Document("D2", "Malaria", "Anopheles mosquitoes transmit malaria parasites."),
    Document("D3", "Scurvy", "Vitamin C deficiency causes scurvy and bleeding gums."),
]


def test_fingerprint_follows_content_and_order():
    same = [Document(d.id, d.title, d.text) for d in DOCS]
    assert corpus_fingerprint(DOCS) == corpus_fingerprint(same)
    assert corpus_fingerprint(DOCS) != corpus_fingerprint(DOCS[::-1])
    edited = [*DOCS[:2], Document("D3", "Scurvy", "Vitamin C deficiency causes scurvy.")]
    assert corpus_fingerprint(DOCS) != corpus_fingerprint(edited)
    assert index_key("bm25", "abc", {"k1": 1.5}) != index_key("bm25", "abc", {"k1": 1.2})


def test_second_store_loads_the_cached_bm25_index(tmp_path: Path):
    cfg = PipelineConfig(retriever="bm25", reranker="none", index_dir=str(tmp_path))
    IndexStore(cfg, DOCS).bm25()
    built = sorted(tmp_path.iterdir())
    assert len(built) == 1 and built[0].name.startswith("bm25-")
    mtimes = {p.name: p.stat().st_mtime_ns for p in built[0].iterdir()}

    index = IndexStore(cfg, DOCS).bm25()
    assert sorted(tmp_path.iterdir()) == built
    assert {p.name: p.stat().st_mtime_ns for p in built[0].iterdir()} == mtimes
    assert isinstance(index.model.scores["data"], np.memmap)

    changed = PipelineConfig(retriever="bm25", reranker="none", index_dir=str(tmp_path), bm25_k1=1.0)
    IndexStore(changed, DOCS).bm25()
    assert len(list(tmp_path.iterdir())) == 2


def test_corrupted_bm25_index_is_rebuilt(tmp_path: Path):
    cfg = PipelineConfig(retriever="bm25", reranker="none", index_dir=str(tmp_path))
    expected = IndexStore(cfg, DOCS).bm25().search(["malaria mosquito"], 3)
    (index_dir,) = tmp_path.iterdir()
    (index_dir / "data.csc.index.npy").write_bytes(b"\x93NUMPY garbage")  # a torn write

    index = IndexStore(cfg, DOCS).bm25()
    docs, scores = index.search(["malaria mosquito"], 3)[0]
    np.testing.assert_array_equal(docs, expected[0][0])
    np.testing.assert_allclose(scores, expected[0][1])


def test_index_for_another_corpus_is_not_reused(tmp_path: Path):
    """An index whose document count does not match (e.g. copied over by hand) is rebuilt, not trusted."""
    cfg = PipelineConfig(retriever="bm25", reranker="none", index_dir=str(tmp_path))
    store = IndexStore(cfg, DOCS)
    store.bm25()
    (index_dir,) = tmp_path.iterdir()
    other = IndexStore(
        PipelineConfig(retriever="bm25", reranker="none", index_dir=str(tmp_path / "o")), DOCS[:2]
    )
    other.bm25()
    (other_dir,) = (tmp_path / "o").iterdir()
    for f in other_dir.iterdir():
        (index_dir / f.name).write_bytes(f.read_bytes())

    assert IndexStore(cfg, DOCS).bm25().n_docs == 3


def test_failed_build_leaves_no_directory(tmp_path: Path):
    def build(directory: Path) -> None:
        (directory / "part.npy").write_bytes(b"half")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        load_or_build(tmp_path / "bm25-x", build, lambda d: d)
    assert list(tmp_path.iterdir()) == []
