"""Pair the teacher's and the student's records per question and label each question simple or hard.

A question is *simple* when the student's answer is good enough: its quality is at least ``tolerance`` times
the teacher's, both measured by one metric of :data:`QUALITY_METRICS` against one reference (the teacher's
answer, or the dataset's gold answer where the record has one). The per-question qualities are kept next to the
label: the evaluation's PGR curves are computed from them, not from the binary label.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ragroute.errors import UserError
from ragroute.quality import citation_overlap, extract_decision, own_doc_cited, rouge_l, token_f1
from ragroute.records import AnswerRecord, read_records
from ragroute.registry import Registry
from router.config import LabelConfig
from router.features import retrieval_signals


@dataclass
class Reference:
    """What an answer is scored against."""

    text: str
    decision: str | None
    cited_text: str  # the answer whose citations are the reference (the teacher's)
    doc_ids: list[str] = field(default_factory=list)
    gold_doc_id: str | None = None


def _decision(answer: str, ref: Reference) -> float:
    return float(extract_decision(answer) == ref.decision)


def _citation(answer: str, ref: Reference) -> float:
    if ref.gold_doc_id is not None:
        return float(own_doc_cited(answer, ref.doc_ids, ref.gold_doc_id))
    return citation_overlap(answer, ref.cited_text)


QUALITY_METRICS: Registry[Callable[[str, Reference], float]] = Registry("quality metric", {
    "decision": _decision,
    "rouge_l": lambda answer, ref: rouge_l(answer, ref.text),
    "token_f1": lambda answer, ref: token_f1(answer, ref.text),
    "citation": _citation,
    "decision_rouge": lambda answer, ref: 0.5 * (_decision(answer, ref) + rouge_l(answer, ref.text)),
})


def reference_for(teacher: AnswerRecord, kind: str) -> Reference:
    """The teacher's answer as reference, or the record's gold fields where present (``kind == "gold"``)."""
    if kind == "teacher":
        return Reference(teacher.answer, extract_decision(teacher.answer), teacher.answer, list(teacher.doc_ids))
    return Reference(
        text=teacher.gold_answer or teacher.answer,
        decision=teacher.gold_decision or extract_decision(teacher.answer),
        cited_text=teacher.answer,
        doc_ids=list(teacher.doc_ids),
        gold_doc_id=teacher.gold_doc_id,
    )


@dataclass
class LabelledSet:
    """One row per question, in the teacher file's order."""

    ids: list[str]
    questions: list[str]
    signals: list[dict[str, float]]
    student_quality: np.ndarray
    teacher_quality: np.ndarray
    teacher_needed: np.ndarray  # bool: the label the router learns (True = hard)
    student_generation_s: np.ndarray
    teacher_generation_s: np.ndarray
    student_total_s: np.ndarray
    teacher_total_s: np.ndarray
    teacher_records: list[AnswerRecord]
    data_hash: str
    student_records: list[AnswerRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def _load(path: str | Path, role: str) -> list[AnswerRecord]:
    p = Path(path)
    if not p.exists() or (p.is_dir() and not (p / "records.jsonl").exists()):
        raise UserError(f"{role} records not found: {path}")
    try:
        records = read_records(p)
    except (json.JSONDecodeError, TypeError, AttributeError, OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{role} records {path} are not AnswerRecord JSONL: {exc}") from None
    if not records:
        raise UserError(f"{role} records file {path} is empty")
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise UserError(f"{role} records {path}: question id '{record.id}' appears more than once")
        seen.add(record.id)
    return records


def pair_records(
    teacher_path: str | Path, student_path: str | Path
) -> tuple[list[AnswerRecord], list[AnswerRecord]]:
    """Teacher and student records of the same questions, aligned; UserError when the files do not match."""
    teacher, student = _load(teacher_path, "teacher"), _load(student_path, "student")
    by_id = {r.id: r for r in student}
    missing = [r.id for r in teacher if r.id not in by_id]
    extra = sorted(set(by_id) - {r.id for r in teacher})
    if missing or extra:
        raise UserError(
            f"teacher and student records are not of the same questions: {len(missing)} teacher ids lack a student "
            f"answer (e.g. {missing[:3]}), {len(extra)} student ids lack a teacher answer (e.g. {extra[:3]})"
        )
    paired = [by_id[r.id] for r in teacher]
    for t, s in zip(teacher, paired, strict=True):
        if t.question.strip() != s.question.strip():
            raise UserError(f"question id '{t.id}' has different question texts in the teacher and student records")
    return teacher, paired


def _generation_s(record: AnswerRecord) -> float:
    return float(record.timings.get("generation", 0.0))


def data_hash(teacher: list[AnswerRecord], student: list[AnswerRecord]) -> str:
    """A hash of what a router learns from: ids, questions, both answers and the retrieval scores."""
    digest = hashlib.sha256()
    for t, s in zip(teacher, student, strict=True):
        row = [t.id, t.question, t.answer, s.answer, t.doc_scores, t.gold_answer, t.gold_decision]
        digest.update(json.dumps(row, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def build_labels(teacher_path: str | Path, student_path: str | Path, cfg: LabelConfig) -> LabelledSet:
    """Read both record files and label every question."""
    teacher, student = pair_records(teacher_path, student_path)
    metric = QUALITY_METRICS[cfg.metric]
    student_q, teacher_q = [], []
    for t, s in zip(teacher, student, strict=True):
        ref = reference_for(t, cfg.reference)
        student_q.append(metric(s.answer, ref))
        teacher_q.append(metric(t.answer, ref))
    q_s, q_t = np.asarray(student_q, dtype=float), np.asarray(teacher_q, dtype=float)
    return LabelledSet(
        ids=[t.id for t in teacher],
        questions=[t.question for t in teacher],
        signals=[retrieval_signals(t.doc_scores) for t in teacher],
        student_quality=q_s,
        teacher_quality=q_t,
        teacher_needed=~(q_s >= cfg.tolerance * q_t - 1e-12),
        student_generation_s=np.array([_generation_s(s) for s in student]),
        teacher_generation_s=np.array([_generation_s(t) for t in teacher]),
        student_total_s=np.array([sum(s.timings.values()) for s in student]),
        teacher_total_s=np.array([sum(t.timings.values()) for t in teacher]),
        teacher_records=teacher,
        data_hash=data_hash(teacher, student),
        student_records=student,
    )
