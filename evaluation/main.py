"""evaluation entry point: ``main(cfg)`` answers the dataset with each system and writes the report."""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from evaluation.config import EvalConfig
from evaluation.latency import Setup, SingleStream
from evaluation.metrics import estimated_generation_s, system_metrics
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
from ragroute.system import Resolved, SystemSpec

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


def eval_corpus(cfg: EvalConfig, recorded: str | None) -> tuple[str | None, str]:
    """The documents eval retrieves over, and how the report names them: ``--corpus``; else the dataset's own
    abstracts where it brings them (a PubMedQA file, 'demo'), so that a new dataset is answered over its own
    documents while everything else comes from the router file; else the corpus its recorded pipeline names."""
    from ragroute.rag.corpus import load_corpus

    if cfg.corpus:
        return cfg.corpus, f"{cfg.corpus} (--corpus)"
    try:
        documents = len(load_corpus(cfg.dataset))
    except UserError:
        return recorded, f"{recorded} (the corpus of the recorded pipeline)"
    return cfg.dataset, f"the dataset's own documents ({documents} in {cfg.dataset})"


def variant_setups(cfg: EvalConfig, teacher: SystemSpec) -> dict[str, Setup]:
    """The extra teacher systems: ``teacher@NAME`` → its pipeline settings and decoding."""
    from ragroute.rag.pipeline import load_pipeline_config

    setups = {}
    for name, pipeline_path in cfg.pipeline_variants.items():
        sampling = copy.deepcopy(teacher.sampling)
        sampling.max_tokens = cfg.variant_sampling.get(name, sampling.max_tokens)
        setups[f"teacher@{name}"] = Setup(load_pipeline_config(pipeline_path), sampling)
    return setups


def single_stream(cfg: EvalConfig, ids: list[str], student_model: str, systems: dict[str, Resolved],
                  variants: dict[str, Setup]) -> dict[str, SingleStream]:
    """Per-question latency of every model system on a sample of ``ids``, answered one at a time."""
    from data_gen.inputs import load_inputs
    from evaluation.latency import measure_single_stream, sample_ids

    if cfg.latency_sample == 0:
        return {}
    teacher, student = systems["teacher"].spec, systems["student"].spec
    inputs = load_inputs(cfg.dataset, cfg.corpus)
    text = {q.id: q.question for q in inputs.questions}
    sample = [(i, text[i]) for i in sample_ids(ids, cfg.latency_sample, cfg.seed) if i in text]
    if not sample:
        raise UserError(f"none of the evaluated question ids is in {cfg.dataset}: cannot time single questions")
    cache = Path(cfg.out) / "latency"
    own = {"teacher": Setup(teacher.pipeline, teacher.sampling), **variants}
    measured = measure_single_stream(cfg.teacher, cfg, sample, inputs.corpus, own, cache)
    measured.update(measure_single_stream(student_model, cfg, sample, inputs.corpus,
                                          {"student": Setup(student.pipeline, student.sampling)}, cache))
    return measured


def add_routed(result: dict[str, Any], cfg: EvalConfig, bundle: Any, teacher: list[AnswerRecord],
               student: list[AnswerRecord], timed: dict[str, SingleStream]) -> None:
    """The routed system's metrics, its quality/latency curve and per-question decisions, into ``result``."""
    from ragroute.routing import fitted

    metrics, ids = result["systems"], [r.id for r in teacher]
    routed, flags, scores = route_answers(teacher, student, fitted(bundle, bundle.threshold))
    routed_timed = None
    if timed:
        use_teacher = dict(zip(ids, flags, strict=True))
        router_s = {r.id: r.timings["router"] for r in routed}
        routed_timed = timed["teacher"].routed(timed["student"], use_teacher, router_s)
    metrics["routed"] = system_metrics(routed, flags, cfg.bootstrap, cfg.seed, routed_timed)
    t50, r50 = metrics["teacher"]["total_latency_p50_s"], metrics["routed"]["total_latency_p50_s"]
    curve = quality_curve(teacher, student, scores, estimated_generation_s(teacher, timed.get("teacher")),
                          estimated_generation_s(student, timed.get("student")))
    result.update(threshold=bundle.threshold, curve=curve,
                  routed_vs_teacher_latency_ratio=r50 / t50 if t50 and r50 is not None else None,
                  decisions=[{"id": i, "routed_to": "teacher" if flag else "student", "score": score}
                             for i, flag, score in zip(ids, flags, scores, strict=True)])


def add_cascade(result: dict[str, Any], cfg: EvalConfig, teacher: list[AnswerRecord],
                student: list[AnswerRecord], timed: dict[str, SingleStream]) -> None:
    """The cascade system (the student's verdict step keeps it or escalates), into ``result``."""
    from ragroute.cascade import load_cascade

    cascaded, flags, scores = cascade_answers(teacher, student, load_cascade(cfg.cascade))
    cascade_timed = None
    if timed:  # single-stream: the student's verdict step, then the teacher's whole answer where escalated
        ids = [r.id for r in teacher]
        verdict_s = {i: t.get("verdict", 0.0) for i, t in timed["student"].timings.items()}
        cascade_timed = timed["teacher"].routed(timed["student"], dict(zip(ids, flags, strict=True)),
                                                {r.id: r.timings["router"] for r in cascaded}, verdict_s)
    result["systems"]["cascade"] = system_metrics(cascaded, flags, cfg.bootstrap, cfg.seed, cascade_timed)
    waste = [r.timings.get("escalation_waste", 0.0) for r in cascaded]
    curve = quality_curve(teacher, student, scores, estimated_generation_s(teacher, timed.get("teacher")),
                          estimated_generation_s(student, timed.get("student")))
    result["cascade"] = {"rule": cfg.cascade, "escalated": int(sum(flags)),
                         "escalation_waste_mean_s": sum(waste) / max(1, sum(flags)), "curve": curve}


def main(cfg: EvalConfig) -> dict[str, Any]:
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
    corpus, corpus_note = eval_corpus(cfg, systems["teacher"].spec.pipeline.corpus)
    cfg = replace(cfg, corpus=corpus)
    log.info("eval: retrieving over %s", corpus_note)
    variants = variant_setups(cfg, systems["teacher"].spec)
    teacher = answers(cfg, cfg.teacher, cfg.teacher_records, out / "answers" / "teacher", systems["teacher"].spec)
    student = answers(cfg, student_model, cfg.student_records, out / "answers" / "student", systems["student"].spec)
    student_ids = {r.id for r in student}
    ids = [r.id for r in teacher if r.id in student_ids]
    if not ids:
        raise UserError("the teacher's and the student's answers share no question ids")
    teacher, student = aligned(teacher, ids), aligned(student, ids)
    variant_answers = {
        name: answers(cfg, cfg.teacher, None, out / "answers" / name,
                      replace(systems["teacher"].spec, pipeline=setup.pipeline), setup.sampling.max_tokens)
        for name, setup in variants.items()
    }
    timed = single_stream(cfg, ids, student_model, systems, variants)
    notes = ["routed answers are the teacher's or the student's answer to the same prompt (greedy decoding), "
             "plus the router's own decision time",
             f"latencies (gen/total p50/p95, stages, tokens/s) are single-stream: {cfg.latency_sample} sampled "
             "questions answered one at a time (batch 1) after a warm-up; batch_q_per_min is the throughput of "
             f"the batched answering (up to {cfg.batch_size} questions per engine call) that produced the scored answers"]
    if len(ids) < max(len(student_ids), len(teacher)):
        notes.append(f"only the {len(ids)} questions both models answered are compared")
    metrics = {
        "teacher": system_metrics(teacher, [True] * len(ids), cfg.bootstrap, cfg.seed, timed.get("teacher")),
        "student": system_metrics(student, [False] * len(ids), cfg.bootstrap, cfg.seed, timed.get("student")),
    }
    result: dict[str, Any] = {"dataset": cfg.dataset, "corpus": corpus_note, "n": len(ids), "teacher": cfg.teacher,
                              "student": student_model, "router": router_path, "systems": metrics, "notes": notes,
                              "system": {role: r.info() for role, r in systems.items()},
                              "latency_sample": len(timed["teacher"].timings) if timed else 0}
    if bundle is not None:
        add_routed(result, cfg, bundle, teacher, student, timed)
    if cfg.cascade:
        add_cascade(result, cfg, teacher, student, timed)
    for name, variant in variant_answers.items():
        kept = [i for i in ids if i in {r.id for r in variant}]
        metrics[name] = system_metrics(aligned(variant, kept), [True] * len(kept), cfg.bootstrap, cfg.seed,
                                       timed.get(name))
    paths = write_report(out, result)
    log.info("eval: report in %s, metrics in %s", paths["report"], paths["metrics"])
    return result
