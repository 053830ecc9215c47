"""The one hard set (`router hard-set` and `ragroute loop` alike) from a real fitted router."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragroute.errors import UserError
from ragroute.records import iter_jsonl
from ragroute.routing import needs_teacher
from router.hardset import HIGHEST_SCORE, ROUTED, STUDENT_FAILED, hard_rows, write_rows


def test_hard_rows_are_the_routed_and_the_failed_questions(fitted_bundle, labelled, tmp_path: Path) -> None:
    scores = fitted_bundle.score(labelled.questions, labelled.signals)
    failed = labelled.teacher_needed.tolist()
    rows = hard_rows(fitted_bundle, labelled.ids, labelled.questions, labelled.signals, failed)
    routed = {i for i, s in zip(labelled.ids, scores, strict=True) if needs_teacher(s, fitted_bundle.threshold)}
    assert {r["id"] for r in rows if ROUTED in r["reasons"]} == routed
    assert {r["id"] for r in rows if STUDENT_FAILED in r["reasons"]} == {
        i for i, f in zip(labelled.ids, failed, strict=True) if f}
    assert [r["id"] for r in rows] == [i for i in labelled.ids if i in {r["id"] for r in rows}]  # input order
    path = write_rows(rows, tmp_path / "hard.jsonl")
    assert list(iter_jsonl(path)) == rows
    with pytest.raises(UserError, match="is a directory"):
        write_rows(rows, tmp_path)


def test_keep_one_exports_the_highest_score_when_nothing_is_hard(fitted_bundle, labelled) -> None:
    fitted_bundle.threshold, saved = 1.01, fitted_bundle.threshold  # no score reaches it: nothing is routed
    try:
        assert hard_rows(fitted_bundle, labelled.ids, labelled.questions, labelled.signals) == []
        rows = hard_rows(fitted_bundle, labelled.ids, labelled.questions, labelled.signals, keep_one=True)
    finally:
        fitted_bundle.threshold = saved
    scores = fitted_bundle.score(labelled.questions, labelled.signals)
    assert len(rows) == 1 and rows[0]["reasons"] == [HIGHEST_SCORE]
    assert rows[0]["id"] == labelled.ids[int(scores.argmax())]
