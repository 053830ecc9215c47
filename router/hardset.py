"""`router hard-set`: the questions the next distillation round should train on.

A question is exported when the router sends it to the teacher, or (given both models' records) when the
student's answer fell short of the teacher's under the router's own labelling rule. Rows use the question-file
fields data_gen reads (``id, question, long_answer, final_decision, doc_id``) plus ``router_score`` and
``reasons``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ragroute.errors import UserError
from ragroute.routing import needs_teacher
from router.persist import RouterBundle

ROUTED = "routed_to_teacher"
STUDENT_FAILED = "student_failed"


def hard_rows(
    bundle: RouterBundle,
    ids: list[str],
    questions: list[str],
    signals: list[dict[str, float]] | None = None,
    student_failed: list[bool] | None = None,
    gold: list[dict[str, str | None]] | None = None,
) -> list[dict[str, Any]]:
    """One row per hard question, in input order."""
    scores = bundle.score(questions, signals)
    rows = []
    for i, (qid, question) in enumerate(zip(ids, questions, strict=True)):
        reasons = []
        if needs_teacher(scores[i], bundle.threshold):
            reasons.append(ROUTED)
        if student_failed is not None and student_failed[i]:
            reasons.append(STUDENT_FAILED)
        if not reasons:
            continue
        row: dict[str, Any] = {"id": qid, "question": question}
        row.update({k: v for k, v in (gold[i] if gold else {}).items() if v is not None})
        row.update({"router_score": round(float(scores[i]), 6), "reasons": reasons})
        rows.append(row)
    return rows


def write_rows(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write the JSONL atomically (a partial curriculum file would silently shrink the next round)."""
    target = Path(path)
    if target.is_dir():
        raise UserError(f"--out {path} is a directory; give a .jsonl file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")  # ASCII escapes: no raw U+2028 for splitlines() to cut
    os.replace(tmp, target)
    return target
