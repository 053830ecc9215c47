"""The corpus store's read side (ragroute.rag.store) over stores built from real files, and InMemoryCorpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from index.corpus_build import build_store
from ragroute.errors import UserError
from ragroute.rag import store as store_module
from ragroute.rag.corpus import DEMO_CORPUS, Document, load_corpus
from ragroute.rag.store import CorpusStore, InMemoryCorpus, is_store, open_corpus


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store") / "demo"
    build_store([str(DEMO_CORPUS)], out)
    return out


def test_store_reads_every_document_like_the_loaded_corpus(demo_store: Path) -> None:
    docs = load_corpus(str(DEMO_CORPUS))
    store = CorpusStore.open(demo_store)
    assert is_store(demo_store) and len(store) == len(docs) == store.manifest["rows"] == store.manifest["live"]
    assert [store.document(i) for i in range(len(docs))] == docs
    order = [5, 0, 59, 5, 17]
    assert store.documents(order) == [docs[i] for i in order]
    assert all(store.position_of(d.id) == i for i, d in enumerate(docs))
    assert store.position_of("no-such-id") is None
    assert store.live_mask().tolist() == [True] * len(docs)
    with pytest.raises(IndexError):
        store.document(len(docs))


def test_store_and_in_memory_corpus_yield_the_same_texts(demo_store: Path) -> None:
    docs = load_corpus(str(DEMO_CORPUS))
    memory, store = InMemoryCorpus(docs), CorpusStore.open(demo_store)
    for start, stop, batch in ((0, None, 7), (3, 40, 16), (10, 11, 4096)):
        assert list(store.iter_texts(start, stop, batch)) == list(memory.iter_texts(start, stop, batch))
    first, ids, texts = next(store.iter_texts(0, 1))
    assert (first, ids) == (0, [docs[0].id])
    assert texts == [f"{docs[0].title}\n{docs[0].text}" if docs[0].title else docs[0].text]
    assert memory.position_of(docs[3].id) == 3 and memory.documents([2, 1]) == [docs[2], docs[1]]
    assert memory.live_mask().all() and len(memory.fingerprint) == 16


def test_a_repeated_id_keeps_its_last_row_live(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", [
        {"id": "1", "title": "A", "text": "first"},
        {"id": "2", "title": "", "text": "other"},
        {"id": "1", "title": "A", "text": "second"},
    ])
    build_store([str(src)], tmp_path / "s")
    store = CorpusStore.open(tmp_path / "s")
    assert store.live_mask().tolist() == [False, True, True]
    assert store.position_of("1") == 2 and store.document(2).text == "second"
    assert store.manifest["history"][0]["replaced"] == 1


def test_position_of_confirms_the_id_when_hashes_collide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every id gets the same 64-bit hash: the lookup must still return each id's own row."""
    monkeypatch.setattr(store_module, "id_hashes", lambda ids: np.zeros(len(list(ids)), dtype=np.uint64))
    import index.corpus_write

    monkeypatch.setattr(index.corpus_write, "id_hashes", store_module.id_hashes)
    src = write_jsonl(tmp_path / "a.jsonl", [{"id": str(i), "text": f"doc {i}"} for i in range(20)])
    build_store([str(src)], tmp_path / "s")
    store = CorpusStore.open(tmp_path / "s")
    assert store.live_mask().all()
    assert [store.position_of(str(i)) for i in range(20)] == list(range(20))
    assert store.position_of("20") is None
    assert store.document(5) == Document("5", "", "doc 5")  # a column of empty strings has no data buffer


def test_opening_a_directory_that_is_not_a_store_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a corpus store"):
        CorpusStore.open(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "ragroute-index/1"}')
    with pytest.raises(UserError, match="ragroute-corpus/1"):
        CorpusStore.open(tmp_path)


def test_documents_of_an_empty_list_and_in_memory_protocol() -> None:
    docs = [Document("a", "", "x"), Document("b", "T", "y")]
    memory = InMemoryCorpus(docs)
    assert memory.documents([]) == [] and memory.position_of("zz") is None
    assert list(memory.iter_texts()) == [(0, ["a", "b"], ["x", "T\ny"])]


def test_rows_across_many_record_batches_and_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Record batches of 7 rows and two segments: reads that start, end and cross batch and segment bounds."""
    import index.corpus_write

    monkeypatch.setattr(index.corpus_write, "BATCH_ROWS", 7)
    docs = [Document(str(i), f"title {i}" if i % 3 else "", "text é " * (i % 5 + 1) + str(i)) for i in range(50)]
    first = write_jsonl(tmp_path / "a.jsonl", [vars(d) for d in docs[:23]])
    second = write_jsonl(tmp_path / "b.jsonl", [vars(d) for d in docs[23:]])
    build_store([str(first), str(second)], tmp_path / "s")
    store, memory = CorpusStore.open(tmp_path / "s"), InMemoryCorpus(docs)
    assert len(store.manifest["segments"]) == 2
    assert store.documents(range(50)) == docs and store.documents([49, 0, 22, 23]) == [docs[i] for i in (49, 0, 22, 23)]
    for start, stop, batch in ((0, None, 5), (6, 30, 9), (20, 26, 100), (0, 50, 50)):
        assert list(store.iter_texts(start, stop, batch)) == list(memory.iter_texts(start, stop, batch))
    assert [store.position_of(str(i)) for i in range(50)] == list(range(50))


def test_open_corpus_picks_the_store_or_memory(demo_store: Path) -> None:
    assert isinstance(open_corpus(demo_store), CorpusStore)
    memory = open_corpus("demo")
    assert isinstance(memory, InMemoryCorpus) and memory.documents([0]) == CorpusStore.open(demo_store).documents([0])


def test_more_segments_than_open_files_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "MAX_OPEN_SEGMENTS", 2)
    files = [str(write_jsonl(tmp_path / f"{i}.jsonl", [{"id": str(i), "text": f"doc {i}"}])) for i in range(5)]
    build_store(files, tmp_path / "s")
    store = CorpusStore.open(tmp_path / "s")
    for _ in range(2):
        assert [d.text for d in store.documents([4, 0, 3, 1, 2])] == ["doc 4", "doc 0", "doc 3", "doc 1", "doc 2"]
    assert len(store._open_segments) <= 2
    store.close()
