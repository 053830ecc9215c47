"""`router eval`: trained routers against the baselines on the same questions, RouteLLM's metrics, a plot.

Baselines in every run: ``random`` (the expectation of random routing), ``heuristic`` (the seed's regex),
``oracle`` (routes by the true gain of the teacher, an upper bound) and the fixed policies ``always_student`` /
``always_teacher``. Trained routers are scored out-of-fold when the questions are their training data (each
question by a router fitted without it), and directly otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.routing import needs_teacher
from router.calibrate import choose_threshold
from router.config import RouterConfig
from router.features import feature_matrix
from router.fit import check_labels, out_of_fold_scores, signal_medians
from router.labels import LabelledSet
from router.metrics import apgr, cpt, interpolate, routing_curve
from router.models import BASELINES
from router.persist import RouterBundle

REPORT_SHARES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _roc_auc(y: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores)) if 0 < y.sum() < len(y) else None


def _rounded(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else round(float(v), 6) for v in values]


def summarize(
    scores: np.ndarray, labelled: LabelledSet, threshold: float | None = None, waste_s: np.ndarray | None = None
) -> dict[str, Any]:
    """APGR, CPT(50%), CPT(80%), quality/PGR/latency at fixed teacher shares and at the threshold, the curve.
    ``waste_s``: seconds an escalated question spends on the student before the teacher starts (the cascade)."""
    teacher_s = labelled.teacher_generation_s if waste_s is None else labelled.teacher_generation_s + waste_s
    curve = routing_curve(
        scores,
        labelled.student_quality,
        labelled.teacher_quality,
        labelled.student_generation_s,
        teacher_s,
    )
    summary: dict[str, Any] = {
        "apgr": apgr(curve),
        "cpt50": cpt(curve, 0.5),
        "cpt80": cpt(curve, 0.8),
        "roc_auc": _roc_auc(labelled.teacher_needed.astype(int), scores),
        "at_share": {f"{share:g}": interpolate(curve, share) for share in REPORT_SHARES},
    }
    if threshold is not None:
        routed = needs_teacher(scores, threshold)
        share = float(routed.mean())
        summary["threshold"] = float(threshold)
        summary["at_threshold"] = interpolate(curve, share)
    summary["curve"] = {
        "teacher_share": _rounded(curve.share),
        "threshold": _rounded(curve.threshold),
        "quality": _rounded(curve.quality),
        "pgr": _rounded(curve.pgr),
        "mean_generation_s": _rounded(curve.mean_generation_s),
    }
    return summary


def trained_router_scores(
    labelled: LabelledSet, cfg: RouterConfig, bundle: RouterBundle | None = None
) -> dict[str, tuple[np.ndarray, float, str]]:
    """name -> (scores, threshold, how scored). Out-of-fold unless ``bundle`` was fitted on other data."""
    results: dict[str, tuple[np.ndarray, float, str]] = {}
    if bundle is not None and bundle.metadata.get("data_hash") != labelled.data_hash:
        scores = bundle.score(labelled.questions, labelled.signals)
        results[bundle.metadata.get("model", "router")] = (scores, bundle.threshold, "held-out (router file)")
        return results
    y = labelled.teacher_needed.astype(int)
    check_labels(y, cfg)
    X = feature_matrix(labelled.questions, labelled.signals, cfg.features, signal_medians(labelled.signals))
    for model in dict.fromkeys([cfg.model, *cfg.compare_models]):
        scores = out_of_fold_scores(X, y, cfg, model)
        threshold = choose_threshold(
            cfg.threshold_rule, cfg.threshold_target, scores, labelled.student_quality, labelled.teacher_quality
        )
        results[model] = (scores, threshold, f"out-of-fold ({cfg.cv_folds} folds)")
    return results


def cascade_summary(labelled: LabelledSet, cfg: RouterConfig) -> dict[str, Any]:
    """The cascade scored out-of-fold, its latency curve charged with the measured escalation waste."""
    from router.cascade import escalation_waste_s, fit_cascade

    rule, oof = fit_cascade(labelled, labelled.student_records, cfg)
    waste = escalation_waste_s(labelled.student_records)
    student_s = float(labelled.student_generation_s.mean())
    summary = {"kind": "cascade", "scored": f"out-of-fold ({cfg.cv_folds} folds)",
               **summarize(oof, labelled, rule.threshold, waste)}
    summary["escalation_waste"] = {
        "mean_s": float(waste.mean()),
        "student_full_answer_mean_s": student_s,
        "share_of_student_answer": float(waste.mean() / student_s) if student_s > 0 else None,
    }
    summary["rule_fitted_on_all"] = {"weights": rule.weights, "intercept": rule.intercept}
    return summary


def evaluate(labelled: LabelledSet, cfg: RouterConfig, bundle: RouterBundle | None = None) -> dict[str, Any]:
    routers: dict[str, Any] = {}
    for name, (scores, threshold, how) in trained_router_scores(labelled, cfg, bundle).items():
        routers[name] = {"kind": "trained", "scored": how, **summarize(scores, labelled, threshold)}
    if cfg.cascade.enabled:
        routers["cascade"] = cascade_summary(labelled, cfg)
    for name, make in BASELINES.items():
        scores = make().score(labelled.questions, labelled.signals)
        routers[name] = {"kind": "baseline", **summarize(scores, labelled)}
    oracle_scores = labelled.teacher_quality - labelled.student_quality
    routers["oracle"] = {"kind": "baseline", **summarize(oracle_scores, labelled)}
    fixed = {
        "always_student": {
            "teacher_share": 0.0,
            "quality": float(labelled.student_quality.mean()),
            "mean_generation_s": float(labelled.student_generation_s.mean()),
            "mean_total_s": float(labelled.student_total_s.mean()),
        },
        "always_teacher": {
            "teacher_share": 1.0,
            "quality": float(labelled.teacher_quality.mean()),
            "mean_generation_s": float(labelled.teacher_generation_s.mean()),
            "mean_total_s": float(labelled.teacher_total_s.mean()),
        },
    }
    gap = fixed["always_teacher"]["quality"] - fixed["always_student"]["quality"]
    return {
        "n": len(labelled),
        "labels": {**vars(cfg.labels), "share_hard": float(labelled.teacher_needed.mean())},
        "quality_gap": gap,
        "note": None if gap > 1e-12 else "the teacher is not better than the student here: PGR, APGR and CPT are undefined",
        "data_hash": labelled.data_hash,
        "fixed": fixed,
        "routers": routers,
    }


def plot_curves(report: dict[str, Any], path: Path) -> Path:
    """Quality against teacher share for every router and baseline, with the two fixed policies as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, summary in report["routers"].items():
        curve = summary["curve"]
        style = {"linestyle": "--", "linewidth": 1.2} if summary["kind"] == "baseline" else {"linewidth": 2}
        label = name if summary["apgr"] is None else f"{name} (APGR {summary['apgr']:.2f})"
        ax.plot(curve["teacher_share"], curve["quality"], label=label, **style)
    for name, point in report["fixed"].items():
        ax.scatter([point["teacher_share"]], [point["quality"]], marker="o", zorder=3, label=name)
    metric = report["labels"]["metric"]
    ax.set_xlabel("share of questions sent to the teacher")
    ax.set_ylabel(f"mean answer quality ({metric} vs {report['labels']['reference']})")
    ax.set_title(f"Router quality vs teacher calls (n={report['n']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "router_eval.json"
    json_path.write_text(json.dumps(report, indent=2))
    return json_path, plot_curves(report, out / "router_curve.png")
