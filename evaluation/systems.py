"""The systems under comparison: each model alone (answers via data_gen, resumable), and routed."""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ragroute.errors import UserError
from ragroute.models import ragroute_home
from ragroute.records import AnswerRecord, read_records
from ragroute.routing import RoutingPolicy, retrieval_signals


def demo_dir() -> Path:
    return ragroute_home() / "demo"


def resolve_demo_artifact(value: str | None, artifact: str) -> str | None:
    """'demo' names what `ragroute demo` produced; anything else is used as given."""
    if value != "demo":
        return value
    path = demo_dir() / artifact
    if not path.exists():
        raise UserError(f"{path} does not exist: run `ragroute demo` first, or name the model/router explicitly")
    return str(path)


def answer_with_model(model_config: str, cfg: Any, out_dir: Path, system: Any,
                      max_tokens: int | None = None) -> list[AnswerRecord]:
    """Answer the dataset's questions with one model through the RAG pipeline and sampling of ``system`` (a
    :class:`ragroute.system.SystemSpec`), as a data_gen run, so it resumes."""
    from data_gen.config import DataGenConfig
    from data_gen.main import main as data_gen_main

    sampling = copy.deepcopy(system.sampling)
    if max_tokens is not None:
        sampling.max_tokens = max_tokens
    run = DataGenConfig(
        model_config=model_config,
        questions=cfg.dataset,
        corpus=cfg.corpus,
        out=str(out_dir),
        batch_size=cfg.batch_size,
        limit=cfg.limit,
        pipeline=system.pipeline,
        engine=cfg.engine,
        sampling=sampling,
    )
    counts = data_gen_main(run)
    records = read_records(out_dir) if (out_dir / "records.jsonl").exists() else []
    if not records:
        examples = "; ".join(counts.get("problem_examples", [])[:3])
        raise UserError(f"no question of {cfg.dataset} could be answered by {model_config}: "
                        f"{counts.get('problems', 0)} skipped ({examples or 'no questions'}); with --corpus, check "
                        "that it holds the documents the questions' doc_id fields name")
    return records


def route_answers(
    teacher: list[AnswerRecord], student: list[AnswerRecord], policy: RoutingPolicy
) -> tuple[list[AnswerRecord], list[bool], list[float]]:
    """The routed system: per question, the router picks the teacher's or the student's answer (both made from
    the same prompt, greedy), and its own decision time is added as the ``router`` stage. Decisions are made as
    serve makes them: the same policy, on the retrieval signals of the prompt's documents."""
    routed, flags, scores = [], [], []
    for t, s in zip(teacher, student, strict=True):
        started = time.perf_counter()
        decision = policy.decide(t.question, retrieval_signals(t.doc_scores))
        decision_s = time.perf_counter() - started
        chosen = t if decision.use_teacher else s
        routed.append(replace(chosen, timings={**chosen.timings, "router": decision_s}))
        flags.append(decision.use_teacher)
        scores.append(decision.score)
    return routed, flags, scores


def cascade_answers(
    teacher: list[AnswerRecord], student: list[AnswerRecord], rule: Any
) -> tuple[list[AnswerRecord], list[bool], list[float]]:
    """The cascade: the student's verdict step decides (its record's ``verdict_probs``); an escalated question is
    the teacher's answer, charged with the student's verdict step (``escalation_waste``, in ``generation`` too)."""
    answered, flags, scores = [], [], []
    for t, s in zip(teacher, student, strict=True):
        if not s.verdict_probs:
            raise UserError(f"student record {s.id} has no verdict_probs: the cascade needs verdict-first answers")
        started = time.perf_counter()
        decision = rule.decide(s.verdict_probs)
        decision_s = time.perf_counter() - started
        if decision.use_teacher:
            waste = float(s.timings.get("verdict", 0.0))
            timings = {**t.timings, "router": decision_s, "escalation_waste": waste,
                       "generation": t.timings.get("generation", 0.0) + waste}
            answered.append(replace(t, timings=timings))
        else:
            answered.append(replace(s, timings={**s.timings, "router": decision_s}))
        flags.append(decision.use_teacher)
        scores.append(decision.score)
    return answered, flags, scores


def quality_curve(
    teacher: list[AnswerRecord], student: list[AnswerRecord], scores: list[float],
    teacher_gen_s: Any = None, student_gen_s: Any = None,
) -> list[dict[str, float | None]]:
    """Decision accuracy and mean generation time of the routed system as the teacher share goes 0 → 1: the
    router stage's routing curve (tied scores routed together), with correctness against the gold verdict.
    Generation times are per-question single-stream estimates (``None``: no latency column)."""
    import numpy as np

    from ragroute.quality import extract_decision
    from router.metrics import routing_curve

    def correct(records: list[AnswerRecord]) -> np.ndarray:
        return np.array([extract_decision(r.answer) == r.gold_decision for r in records], dtype=float)

    timed = teacher_gen_s is not None and student_gen_s is not None
    curve = routing_curve(np.asarray(scores), correct(student), correct(teacher),
                          student_gen_s if timed else None, teacher_gen_s if timed else None)
    return [
        {"teacher_share": float(share), "accuracy": float(accuracy),
         "gen_latency_mean_s": float(latency) if timed else None}
        for share, accuracy, latency in zip(curve.share, curve.quality, curve.mean_generation_s, strict=True)
    ]
