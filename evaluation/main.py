"""evaluation entry point: ``main(cfg)`` answers the dataset with each system and writes the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluation.config import EvalConfig
from evaluation.metrics import system_metrics
from evaluation.report import write_report
from evaluation.systems import (
    answer_with_model,
    cascade_answers,
    quality_curve,
    resolve_demo_artifact,
    route_answers,
)
from ragroute.errors import UserError
from ragroute.records import AnswerRecord, read_records


def answers(cfg: EvalConfig, model: str, existing: str | None, out: Path, **variant: Any) -> list[AnswerRecord]:
    """Reuse given data_gen answers, else generate them (resumably) under ``out``."""
    if existing:
        return read_records(existing)[: cfg.limit]
    return answer_with_model(model, cfg, out, **variant)


def aligned(records: list[AnswerRecord], ids: list[str]) -> list[AnswerRecord]:
    by_id = {r.id: r for r in records}
    return [by_id[i] for i in ids]


def main(cfg: EvalConfig) -> dict[str, Any]:
    from ragroute.rag.pipeline import load_pipeline_config

    if not cfg.dataset or not cfg.out:
        raise UserError("give --dataset FILE (or 'demo') and --out DIR")
    out = Path(cfg.out)
    student_model = resolve_demo_artifact(cfg.student, "student.yaml")
    router_path = resolve_demo_artifact(cfg.router, "router.skops")
    teacher = answers(cfg, cfg.teacher, cfg.teacher_records, out / "answers" / "teacher")
    student = answers(cfg, student_model, cfg.student_records, out / "answers" / "student")
    student_ids = {r.id for r in student}
    ids = [r.id for r in teacher if r.id in student_ids]
    if not ids:
        raise UserError("the teacher's and the student's answers share no question ids")
    teacher, student = aligned(teacher, ids), aligned(student, ids)
    notes = ["routed answers are the teacher's or the student's answer to the same prompt (greedy decoding), "
             "plus the router's own decision time"]
    if len(ids) < max(len(student_ids), len(teacher)):
        notes.append(f"only the {len(ids)} questions both models answered are compared")
    systems = {
        "teacher": system_metrics(teacher, [True] * len(ids), cfg.bootstrap, cfg.seed),
        "student": system_metrics(student, [False] * len(ids), cfg.bootstrap, cfg.seed),
    }
    result: dict[str, Any] = {"dataset": cfg.dataset, "n": len(ids), "teacher": cfg.teacher,
                              "student": student_model, "router": router_path, "systems": systems, "notes": notes}
    if router_path:
        from router.persist import load_router

        bundle = load_router(router_path, trusted=cfg.trust_router)
        routed, flags, scores = route_answers(teacher, student, bundle)
        systems["routed"] = system_metrics(routed, flags, cfg.bootstrap, cfg.seed)
        t50, r50 = systems["teacher"]["total_latency_p50_s"], systems["routed"]["total_latency_p50_s"]
        result.update(threshold=bundle.threshold, curve=quality_curve(teacher, student, scores),
                      routed_vs_teacher_latency_ratio=r50 / t50 if t50 else None)
    if cfg.cascade:
        from ragroute.cascade import load_cascade

        cascaded, flags, scores = cascade_answers(teacher, student, load_cascade(cfg.cascade))
        systems["cascade"] = system_metrics(cascaded, flags, cfg.bootstrap, cfg.seed)
        waste = [r.timings.get("escalation_waste", 0.0) for r in cascaded]
        result["cascade"] = {"rule": cfg.cascade, "escalated": int(sum(flags)),
                             "escalation_waste_mean_s": sum(waste) / max(1, sum(flags)),
                             "curve": quality_curve(teacher, student, scores)}
    for name, pipeline_path in cfg.pipeline_variants.items():
        variant = answers(cfg, cfg.teacher, None, out / "answers" / f"teacher@{name}",
                          pipeline=load_pipeline_config(pipeline_path), max_tokens=cfg.variant_sampling.get(name))
        by_id = {r.id for r in variant}
        kept = [i for i in ids if i in by_id]
        systems[f"teacher@{name}"] = system_metrics(aligned(variant, kept), [True] * len(kept), cfg.bootstrap, cfg.seed)
    paths = write_report(out, result)
    print(f"eval: report in {paths['report']}, metrics in {paths['metrics']}")
    return result
