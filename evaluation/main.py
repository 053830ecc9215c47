"""evaluation entry point: ``main(cfg)`` answers the dataset with each system and writes the report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from evaluation.config import EvalConfig
from evaluation.metrics import system_metrics
from evaluation.report import write_report
from evaluation.systems import answer_with_model, quality_curve, resolve_demo_artifact, route_answers
from ragroute.errors import UserError
from ragroute.records import AnswerRecord, read_records
from ragroute.system import Resolved

log = logging.getLogger("ragroute.eval")


def answers(cfg: EvalConfig, model: str, existing: str | None, out: Path, system: Any,
            max_tokens: int | None = None) -> list[AnswerRecord]:
    """Reuse given data_gen answers, else generate them (resumably) under ``out`` with ``system``."""
    if existing:
        return read_records(existing)[: cfg.limit]
    return answer_with_model(model, cfg, out, system, max_tokens)


def aligned(records: list[AnswerRecord], ids: list[str]) -> list[AnswerRecord]:
    by_id = {r.id: r for r in records}
    return [by_id[i] for i in ids]


def eval_systems(cfg: EvalConfig, student_model: str, bundle: Any | None, router_path: str | None) -> dict[str, Resolved]:
    """The teacher's and the student's systems: as configured, else as the router file recorded them (the system
    its labels came from); a difference is an error unless ``system_override``."""
    from ragroute.models import load_model_spec
    from ragroute.system import resolve_system

    recorded = (bundle.metadata.get("systems") or {}) if bundle is not None else {}
    source = f"the router file {router_path}" if bundle is not None else None
    teacher = resolve_system("teacher", load_model_spec(cfg.teacher), cfg.pipeline, cfg.sampling,
                             recorded.get("teacher"), source, cfg.system_override)
    student = resolve_system("student", load_model_spec(student_model), teacher.spec.pipeline,
                             teacher.spec.sampling, recorded.get("student"), source, cfg.system_override)
    return {"teacher": teacher, "student": student}


def main(cfg: EvalConfig) -> dict[str, Any]:
    from ragroute.rag.pipeline import load_pipeline_config
    from ragroute.routing import fitted

    if not cfg.dataset or not cfg.out:
        raise UserError("give --dataset FILE (or 'demo') and --out DIR")
    out = Path(cfg.out)
    student_model = resolve_demo_artifact(cfg.student, "student.yaml")
    router_path = resolve_demo_artifact(cfg.router, "router.skops")
    bundle = None
    if router_path:
        from router.persist import load_router

        bundle = load_router(router_path, trusted=cfg.trust_router)
    systems = eval_systems(cfg, student_model, bundle, router_path)
    teacher = answers(cfg, cfg.teacher, cfg.teacher_records, out / "answers" / "teacher", systems["teacher"].spec)
    student = answers(cfg, student_model, cfg.student_records, out / "answers" / "student", systems["student"].spec)
    student_ids = {r.id for r in student}
    ids = [r.id for r in teacher if r.id in student_ids]
    if not ids:
        raise UserError("the teacher's and the student's answers share no question ids")
    teacher, student = aligned(teacher, ids), aligned(student, ids)
    notes = ["routed answers are the teacher's or the student's answer to the same prompt (greedy decoding), "
             "plus the router's own decision time"]
    if len(ids) < max(len(student_ids), len(teacher)):
        notes.append(f"only the {len(ids)} questions both models answered are compared")
    metrics = {
        "teacher": system_metrics(teacher, [True] * len(ids), cfg.bootstrap, cfg.seed),
        "student": system_metrics(student, [False] * len(ids), cfg.bootstrap, cfg.seed),
    }
    result: dict[str, Any] = {"dataset": cfg.dataset, "n": len(ids), "teacher": cfg.teacher,
                              "student": student_model, "router": router_path, "systems": metrics, "notes": notes,
                              "system": {role: r.info() for role, r in systems.items()}}
    if bundle is not None:
        routed, flags, scores = route_answers(teacher, student, fitted(bundle, bundle.threshold))
        metrics["routed"] = system_metrics(routed, flags, cfg.bootstrap, cfg.seed)
        t50, r50 = metrics["teacher"]["total_latency_p50_s"], metrics["routed"]["total_latency_p50_s"]
        result.update(threshold=bundle.threshold, curve=quality_curve(teacher, student, scores),
                      routed_vs_teacher_latency_ratio=r50 / t50 if t50 else None,
                      decisions=[{"id": i, "routed_to": "teacher" if flag else "student", "score": score}
                                 for i, flag, score in zip(ids, flags, scores, strict=True)])
    for name, pipeline_path in cfg.pipeline_variants.items():
        from dataclasses import replace

        variant_system = replace(systems["teacher"].spec, pipeline=load_pipeline_config(pipeline_path))
        variant = answers(cfg, cfg.teacher, None, out / "answers" / f"teacher@{name}", variant_system,
                          cfg.variant_sampling.get(name))
        kept = [i for i in ids if i in {r.id for r in variant}]
        metrics[f"teacher@{name}"] = system_metrics(aligned(variant, kept), [True] * len(kept), cfg.bootstrap, cfg.seed)
    paths = write_report(out, result)
    log.info("eval: report in %s, metrics in %s", paths["report"], paths["metrics"])
    return result
