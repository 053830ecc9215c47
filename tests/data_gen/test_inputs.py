"""data_gen's inputs over a corpus store: gold doc ids are looked up through the store (a deleted id is an
unknown one), and the store is handed on as the memory-mapped reader, not loaded into a list."""

from __future__ import annotations

import json
from pathlib import Path

from data_gen.inputs import load_inputs
from index.corpus_build import build_store, update_store
from ragroute.rag.store import CorpusStore


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gold_doc_ids_are_checked_against_the_live_store(tmp_path: Path) -> None:
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": f"D{i}", "title": "", "text": f"text {i}"} for i in range(4)])
    store = tmp_path / "store"
    build_store([str(docs)], store)
    update_store(store, [str(write_jsonl(tmp_path / "u.jsonl", [{"id": "D1", "title": "", "text": "new text"}]))])
    questions = write_jsonl(tmp_path / "q.jsonl", [
        {"id": "q0", "question": "about 0?", "doc_id": "D0"},
        {"id": "q1", "question": "about 1?", "doc_id": "D1"},  # replaced: its live row is the new one
        {"id": "q9", "question": "about 9?", "doc_id": "D9"},
    ])
    inputs = load_inputs(str(questions), str(store))
    assert isinstance(inputs.corpus, CorpusStore)
    assert [q.id for q in inputs.questions] == ["q0", "q1"]
    assert inputs.problems == ["question q9: unknown doc id D9"]
