"""Loaders on the real shared PubMedQA file, the bundled demo data, and bad input written to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragroute.errors import UserError
from ragroute.rag.corpus import DEMO_CORPUS, load_corpus, load_questions


def test_pubmedqa_corpus_is_the_abstracts_keyed_by_pmid(pqal_dev_path: Path):
    raw = json.loads(pqal_dev_path.read_text())
    docs = load_corpus(str(pqal_dev_path))
    assert len(docs) == len(raw) == 500
    first_pmid = next(iter(raw))
    doc = next(d for d in docs if d.id == first_pmid)
    assert doc.text == " ".join(raw[first_pmid]["CONTEXTS"])
    # The question is (nearly) the paper's title: using it as the title would leak the answer into retrieval.
    assert all(d.title == "" for d in docs)


def test_pubmedqa_questions_carry_gold_fields(pqal_dev_path: Path):
    raw = json.loads(pqal_dev_path.read_text())
    qs = load_questions(str(pqal_dev_path))
    assert qs.problems == []
    assert len(qs.items) == 500
    item = qs.items[7]
    source = raw[item.id]
    assert item.question == source["QUESTION"].strip()
    assert item.gold_answer == source["LONG_ANSWER"]
    assert item.gold_decision == source["final_decision"]
    assert item.gold_doc_id == item.id
    assert {q.gold_decision for q in qs.items} == {"yes", "no", "maybe"}


def test_data_gen_records_are_questions_with_their_gold_fields(tmp_path: Path):
    from ragroute.records import AnswerRecord, JsonlWriter

    path = tmp_path / "records.jsonl"
    with JsonlWriter(path, fsync=False) as writer:
        writer.write(AnswerRecord(id="1", question="Do statins work?", answer="No, never.", model="m", gold_answer="Yes, they do.",
                                  gold_decision="yes", gold_doc_id="D1"))
        writer.write(AnswerRecord(id="2", question="What is malaria?", answer="A fever [0].", model="m"))
    first, second = load_questions(str(path)).items
    assert (first.id, first.gold_answer, first.gold_decision, first.gold_doc_id) == ("1", "Yes, they do.", "yes", "D1")
    assert (second.gold_answer, second.gold_decision) == (None, None)  # the model's answer is never taken as gold


def test_demo_corpus_and_questions():
    docs = load_corpus(str(DEMO_CORPUS))
    assert len(docs) == 60 and all(d.title and d.text for d in docs)
    qs = load_questions(str(DEMO_CORPUS.parent / "questions.jsonl"))
    assert qs.problems == [] and len(qs.items) == 60
    ids = {d.id for d in docs}
    assert all(q.gold_doc_id in ids for q in qs.items)
    assert all(q.gold_answer for q in qs.items)


def test_bad_question_lines_are_reported_and_skipped(tmp_path: Path):
    lines = [
        json.dumps(
            {"id": "a", "question": "Does aspirin prevent stroke?", "final_decision": "yes", "doc_id": "D1"}
        ),
        "",
        "{not json",
        json.dumps({"id": "b", "question": "   "}),
        json.dumps({"id": "c", "question": "Is it?", "final_decision": "perhaps"}),
        json.dumps(["a", "list"]),
        json.dumps({"id": "a", "question": "Same id again?"}),
        json.dumps({"id": "d", "question": "What is BMI?", "answer": "Weight over height squared."}),
    ]
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    qs = load_questions(str(path))
    assert [q.id for q in qs.items] == ["a", "d"]
    assert qs.items[0].gold_decision == "yes" and qs.items[0].gold_doc_id == "D1"
    assert qs.items[1].gold_answer == "Weight over height squared." and qs.items[1].gold_decision is None
    assert qs.problems[:4] == [
        "line 3: malformed JSON",
        "line 4: empty question",
        "line 5: final_decision must be yes, no or maybe, not 'perhaps'",
        "line 6: not a JSON object",
    ]
    assert "duplicate" in qs.problems[4] and len(qs.problems) == 5


def test_truncated_last_line_is_a_problem_not_a_crash(tmp_path: Path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": "1", "question": "Complete?"}) + '\n{"id": "2", "question": "Cut of')
    qs = load_questions(str(path))
    assert [q.id for q in qs.items] == ["1"] and qs.problems == ["line 2: malformed JSON"]


def test_corpus_jsonl_skips_unusable_rows_and_rejects_duplicate_ids(tmp_path: Path):
    path = tmp_path / "corpus.jsonl"
    rows = [
        {"id": "D1", "title": "T", "text": "Some text."},
        {"id": "D2", "text": ""},
        {"title": "no id", "text": "x"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    docs = load_corpus(str(path))
    assert [(d.id, d.title) for d in docs] == [("D1", "T")]

    path.write_text(path.read_text() + json.dumps({"id": "D1", "title": "", "text": "again"}) + "\n")
    with pytest.raises(UserError, match="D1.*more than once"):
        load_corpus(str(path))


def test_json_list_and_json_named_jsonl_are_read(tmp_path: Path):
    rows = [{"id": "D1", "title": "A", "text": "alpha"}, {"id": "D2", "title": "B", "text": "beta"}]
    as_list = tmp_path / "corpus.json"
    as_list.write_text(json.dumps(rows))
    assert [d.id for d in load_corpus(str(as_list))] == ["D1", "D2"]
    as_lines = tmp_path / "lines.json"
    as_lines.write_text("\n".join(json.dumps(r) for r in rows))
    assert [d.text for d in load_corpus(str(as_lines))] == ["alpha", "beta"]


def test_missing_empty_and_unreadable_inputs_are_user_errors(tmp_path: Path):
    with pytest.raises(UserError, match="not found"):
        load_corpus(str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="not found"):
        load_questions(str(tmp_path / "nope.json"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match="no usable documents"):
        load_corpus(str(empty))
    not_utf8 = tmp_path / "latin1.json"
    not_utf8.write_bytes(b'{"123": {"QUESTION": "caf\xe9?", "CONTEXTS": ["x"]}}')
    with pytest.raises(UserError, match="cannot read"):
        load_corpus(str(not_utf8))


def test_a_directory_without_a_dataset_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="could not load corpus"):
        load_corpus(str(tmp_path))
