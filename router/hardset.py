"""`router hard-set`: the questions the next distillation round should train on.

A question is exported when the router sends it to the teacher, or (given both models' records) when the
student's answer fell short of the teacher's under the router's own labelling rule. Rows use the question-file
fields data_gen reads (``id, question, long_answer, final_decision, doc_id``) plus ``router_score`` and
``reasons``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.errors import UserError
from ragroute.records import write_jsonl
from ragroute.routing import needs_teacher
from router.persist import RouterBundle

ROUTED = "routed_to_teacher"
STUDENT_FAILED = "student_failed"
HIGHEST_SCORE = "highest_score"


def hard_rows(
    bundle: RouterBundle,
    ids: list[str],
    questions: list[str],
    signals: list[dict[str, float]] | None = None,
    student_failed: list[bool] | None = None,
    gold: list[dict[str, str | None]] | None = None,
    keep_one: bool = False,
) -> list[dict[str, Any]]:
    """One row per hard question, in input order: the one hard set of ``router hard-set`` and of ``ragroute loop``.
    ``keep_one``: when no question is hard, the highest-scoring one is (reason ``highest_score``), so a
    curriculum round always has data."""
    scores = bundle.score(questions, signals)
    reasons = [[ROUTED] if needs_teacher(score, bundle.threshold) else [] for score in scores]
    for i, failed in enumerate(student_failed or ()):
        if failed:
            reasons[i].append(STUDENT_FAILED)
    if keep_one and len(scores) and not any(reasons):
        reasons[int(np.argmax(scores))].append(HIGHEST_SCORE)
    rows = []
    for i, (qid, question) in enumerate(zip(ids, questions, strict=True)):
        if not reasons[i]:
            continue
        row: dict[str, Any] = {"id": qid, "question": question}
        row.update({k: v for k, v in (gold[i] if gold else {}).items() if v is not None})
        row.update({"router_score": round(float(scores[i]), 6), "reasons": reasons[i]})
        rows.append(row)
    return rows


def write_rows(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write the JSONL atomically (a partial curriculum file would silently shrink the next round)."""
    if Path(path).is_dir():
        raise UserError(f"--out {path} is a directory; give a .jsonl file name")
    return write_jsonl(path, rows)
