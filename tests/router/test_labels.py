"""Labelling from paired records, and the bad inputs that must be UserErrors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragroute.errors import UserError
from ragroute.records import AnswerRecord, JsonlWriter
from router.config import LabelConfig
from router.labels import build_labels, pair_records


def _write(path: Path, rows: list[dict]) -> Path:
    path.unlink(missing_ok=True)
    with JsonlWriter(path, fsync=False) as writer:
        for row in rows:
            writer.write(AnswerRecord(**{"model": "m", **row}))
    return path


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    teacher = _write(tmp_path / "t.jsonl", [
        {"id": "a", "question": "Does A work?", "answer": "Yes. A works [0].", "gold_decision": "yes",
         "gold_answer": "A works well.", "doc_ids": ["d1", "d2"], "gold_doc_id": "d1", "doc_scores": [9.0, 3.0],
         "timings": {"retrieval": 0.5, "generation": 4.0}},
        {"id": "b", "question": "Does B work?", "answer": "No, B fails [1].", "gold_decision": "yes",
         "doc_ids": ["d1", "d2"], "gold_doc_id": "d2", "timings": {"generation": 5.0}},
        {"id": "c", "question": "Does C work?", "answer": "Maybe [0].", "timings": {"generation": 6.0}},
    ])
    student = _write(tmp_path / "s.jsonl", [
        {"id": "c", "question": "Does C work?", "answer": "It is unclear.", "timings": {"generation": 1.0}},
        {"id": "a", "question": "Does A work?", "answer": "Yes, A works well [1].", "timings": {"generation": 1.5}},
        {"id": "b", "question": "Does B work?", "answer": "Yes [1].", "timings": {"generation": 2.0}},
    ])
    return teacher, student


def test_decision_labels_against_the_teacher(tmp_path: Path) -> None:
    labelled = build_labels(*_pair(tmp_path), LabelConfig(metric="decision", reference="teacher"))
    assert labelled.ids == ["a", "b", "c"]  # teacher order, student file reordered to match
    assert labelled.student_quality.tolist() == [1.0, 0.0, 1.0]  # b: student yes vs teacher no
    assert labelled.teacher_quality.tolist() == [1.0, 1.0, 1.0]
    assert labelled.teacher_needed.tolist() == [False, True, False]
    assert labelled.teacher_generation_s.tolist() == [4.0, 5.0, 6.0]
    assert labelled.student_generation_s.tolist() == [1.5, 2.0, 1.0]
    assert labelled.teacher_total_s[0] == 4.5
    assert labelled.signals[0]["top_score"] == 9.0 and labelled.signals[2]["n_docs"] == 0


def test_decision_labels_against_gold(tmp_path: Path) -> None:
    labelled = build_labels(*_pair(tmp_path), LabelConfig(metric="decision", reference="gold"))
    # b: gold yes; the teacher said no (0), the student yes (1) -> simple. c has no gold: the teacher's maybe.
    assert labelled.teacher_quality.tolist() == [1.0, 0.0, 1.0]
    assert labelled.student_quality.tolist() == [1.0, 1.0, 1.0]
    assert not labelled.teacher_needed.any()


def test_citation_labels(tmp_path: Path) -> None:
    gold = build_labels(*_pair(tmp_path), LabelConfig(metric="citation", reference="gold"))
    # a: gold doc d1 is [0]; the teacher cites [0], the student [1]. b: gold doc d2 = [1]; both cite [1].
    assert gold.teacher_quality.tolist()[:2] == [1.0, 1.0]
    assert gold.student_quality.tolist()[:2] == [0.0, 1.0]
    overlap = build_labels(*_pair(tmp_path), LabelConfig(metric="citation", reference="teacher"))
    assert overlap.student_quality.tolist() == [0.0, 1.0, 0.0]


def test_tolerance_and_text_metrics(tmp_path: Path) -> None:
    strict = build_labels(*_pair(tmp_path), LabelConfig(metric="token_f1", reference="gold", tolerance=1.0))
    lenient = build_labels(*_pair(tmp_path), LabelConfig(metric="token_f1", reference="gold", tolerance=0.1))
    assert strict.teacher_needed.sum() >= lenient.teacher_needed.sum()
    rouge = build_labels(*_pair(tmp_path), LabelConfig(metric="rouge_l", reference="teacher"))
    assert rouge.teacher_quality.tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert 0 < rouge.student_quality[0] < 1


def test_data_hash_tracks_content(tmp_path: Path) -> None:
    teacher, student = _pair(tmp_path)
    first = build_labels(teacher, student, LabelConfig()).data_hash
    assert build_labels(teacher, student, LabelConfig(metric="rouge_l")).data_hash == first
    lines = student.read_text().splitlines()
    lines[0] = lines[0].replace("It is unclear.", "No.")
    student.write_text("\n".join(lines) + "\n")
    assert build_labels(teacher, student, LabelConfig()).data_hash != first


def test_bad_inputs_are_user_errors(tmp_path: Path) -> None:
    teacher, student = _pair(tmp_path)
    with pytest.raises(UserError, match="teacher records not found"):
        pair_records(tmp_path / "missing.jsonl", student)
    with pytest.raises(UserError, match="student records not found"):
        pair_records(teacher, tmp_path)  # a directory without records.jsonl
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="empty"):
        pair_records(teacher, empty)
    fewer = _write(tmp_path / "fewer.jsonl", [{"id": "a", "question": "Does A work?", "answer": "Yes."}])
    with pytest.raises(UserError, match="not of the same questions"):
        pair_records(teacher, fewer)
    renamed = _write(tmp_path / "renamed.jsonl", [
        {"id": i, "question": q, "answer": "Yes."}
        for i, q in [("a", "Does A work?"), ("b", "Does B work?"), ("c", "Is C different?")]
    ])
    with pytest.raises(UserError, match="different question texts"):
        pair_records(teacher, renamed)
    twice = _write(tmp_path / "twice.jsonl", [{"id": "a", "question": "Q?", "answer": "Yes."}] * 2)
    with pytest.raises(UserError, match="more than once"):
        pair_records(twice, student)
    not_records = tmp_path / "rows.jsonl"
    not_records.write_text(json.dumps({"question": "no id or answer"}) + "\n")
    with pytest.raises(UserError, match="not AnswerRecord"):
        pair_records(not_records, student)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("{not json\n[1, 2]\n")
    with pytest.raises(UserError, match="garbage.jsonl: line 1 is not valid JSON"):  # corrupt, not a torn tail
        pair_records(garbage, student)
