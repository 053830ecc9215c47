"""The router stage's entry points, one per subcommand: fit, fit-cascade, eval, predict, hard-set; ``run`` and
``run_cascade`` return the artifact they write (:class:`RouterFile`, :class:`CascadeRule`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragroute.artifacts import RouterFile
from ragroute.cascade import CascadeRule
from ragroute.routing import needs_teacher
from router.config import RouterConfig
from router.persist import RouterBundle, load_router, save_router

log = logging.getLogger("ragroute.router")


def run(cfg: RouterConfig, teacher: str, student: str, out: str) -> RouterFile:
    """``router fit`` as a call: the router file fitted on the paired records and written to ``out``."""
    bundle = fit_main(cfg, teacher, student, out)
    return RouterFile(bundle.estimator, bundle.threshold, bundle.metadata, Path(out))


def run_cascade(cfg: RouterConfig, teacher: str, student: str, out: str) -> CascadeRule:
    """``router fit-cascade`` as a call: the cascade rule fitted on the paired records and written to ``out``."""
    from ragroute.cascade import load_cascade

    return load_cascade(fit_cascade_main(cfg, teacher, student, out))


def fit_main(cfg: RouterConfig, teacher: str, student: str, out: str) -> RouterBundle:
    """Label the paired records, fit ``cfg.model``, choose its threshold, save it with skops."""
    from router.fit import fit_router
    from router.labels import build_labels

    labelled = build_labels(teacher, student, cfg.labels)
    bundle = fit_router(labelled, cfg)
    bundle.metadata["systems"] = recorded_systems(teacher, student)
    path = save_router(bundle, out)
    meta = bundle.metadata
    log.info(
        f"wrote {path}: threshold {bundle.threshold:.4f} (teacher share {meta['validation_teacher_share']:.2f} on "
        f"out-of-fold scores), params {meta['params']}, CV ROC AUC {meta['cv_roc_auc']}"
    )
    return bundle


def recorded_systems(teacher: str, student: str) -> dict[str, Any]:
    """The systems (pipeline, model, sampling) that wrote the teacher's and the student's records, from their
    data_gen manifests: serve and eval build the routed system from them."""
    from ragroute.system import manifest_system

    return {"teacher": manifest_system(teacher), "student": manifest_system(student)}


def fit_cascade_main(cfg: RouterConfig, teacher: str, student: str, out: str) -> Path:
    """Fit the cascade rule on verdict-first records and write it as JSON (:mod:`ragroute.cascade`)."""
    from router.cascade import fit_cascade
    from router.labels import build_labels

    labelled = build_labels(teacher, student, cfg.labels)
    rule, _ = fit_cascade(labelled, labelled.student_records, cfg)
    path = rule.save(out)
    log.info("wrote %s: threshold %.4f (teacher share %.2f on out-of-fold scores), %d hard of %d", path,
             rule.threshold, rule.metadata["validation_teacher_share"], rule.metadata["n_hard"],
             rule.metadata["n_train"])
    return path


def stored_config(bundle: RouterBundle) -> RouterConfig:
    """The config a router file was fitted with."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ragroute.errors import UserError

    try:
        merged = OmegaConf.merge(OmegaConf.structured(RouterConfig), bundle.metadata["config"])
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except (KeyError, ValueError, OmegaConfBaseException) as exc:
        raise UserError(f"the router file's recorded config is unusable: {exc}") from None


def eval_main(
    cfg: RouterConfig | None, teacher: str, student: str, out_dir: str, router: str | None = None,
    trusted: Sequence[str] = (),
) -> dict[str, Any]:
    """Compare the trained router(s) with the baselines on the paired records; write the JSON and the plot."""
    from router.evaluate import evaluate, write_report
    from router.labels import build_labels

    bundle = load_router(router, trusted) if router else None
    if cfg is None:
        cfg = stored_config(bundle) if bundle is not None else RouterConfig()
    labelled = build_labels(teacher, student, cfg.labels)
    report = evaluate(labelled, cfg, bundle)
    json_path, png_path = write_report(report, out_dir)
    fixed, labels = report["fixed"], report["labels"]
    log.info(
        f"{report['n']} questions, {labels['share_hard']:.1%} hard ({labels['metric']} vs {labels['reference']}); "
        f"quality always-student {fixed['always_student']['quality']:.3f}, "
        f"always-teacher {fixed['always_teacher']['quality']:.3f}"
    )
    if report["note"]:
        log.info(f"note: {report['note']}")

    def shown(value: float | None) -> str:
        return "undefined" if value is None else f"{value:.3f}"

    for name, summary in report["routers"].items():
        log.info(
            f"{name:>12}: APGR {shown(summary['apgr'])}  CPT(50%) {shown(summary['cpt50'])}  "
            f"CPT(80%) {shown(summary['cpt80'])}  ROC AUC {shown(summary['roc_auc'])}"
        )
    log.info(f"wrote {json_path} and {png_path}")
    return report


def predict_main(
    router: str, questions: list[str], signals: dict[str, float] | None = None, trusted: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The decision for each question: use_teacher, score, threshold."""
    bundle = load_router(router, trusted)
    scores = bundle.score(questions, None if signals is None else [signals] * len(questions))
    return [
        {"question": q, "use_teacher": bool(needs_teacher(s, bundle.threshold)), "score": round(float(s), 6),
         "threshold": bundle.threshold}
        for q, s in zip(questions, scores, strict=True)
    ]


def hard_set_main(
    router: str, out: str, teacher: str | None = None, student: str | None = None,
    questions_path: str | None = None, trusted: Sequence[str] = (),
) -> Path:
    """Export the hard questions of a records pair, or of a question file, as a data_gen question file."""
    from router.hardset import hard_rows, write_rows

    bundle = load_router(router, trusted)
    if teacher and student:
        from router.labels import build_labels

        labelled = build_labels(teacher, student, stored_config(bundle).labels)
        gold = [
            {"long_answer": r.gold_answer, "final_decision": r.gold_decision, "doc_id": r.gold_doc_id}
            for r in labelled.teacher_records
        ]
        rows = hard_rows(bundle, labelled.ids, labelled.questions, labelled.signals,
                         labelled.teacher_needed.tolist(), gold)
        total = len(labelled)
    else:
        from ragroute.rag.corpus import load_questions

        items = load_questions(str(questions_path)).items
        gold = [{"long_answer": q.gold_answer, "final_decision": q.gold_decision, "doc_id": q.gold_doc_id} for q in items]
        rows = hard_rows(bundle, [q.id for q in items], [q.question for q in items], None, None, gold)
        total = len(items)
    path = write_rows(rows, out)
    log.info(f"wrote {path}: {len(rows)} of {total} questions are hard")
    return path
