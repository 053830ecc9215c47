"""Fitting and scoring the cascade rule (:mod:`ragroute.cascade`) from paired teacher/student records.

The student's records must be verdict-first (``verdict_probs`` in every record). The rule is a logistic
regression on :data:`ragroute.cascade.FEATURES`; `router eval` scores it out-of-fold like the question-only
routers, with the escalation waste (the student's verdict step, ``timings["verdict"]``) added to the time of every
question it sends to the teacher.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ragroute.artifacts import provenance
from ragroute.cascade import FEATURES, CascadeRule, cascade_features
from ragroute.errors import UserError
from ragroute.records import AnswerRecord
from ragroute.routing import needs_teacher
from router.calibrate import choose_threshold
from router.config import RouterConfig
from router.labels import LabelledSet


def student_verdict_probs(records: list[AnswerRecord]) -> list[dict[str, float]]:
    """Every student record's verdict probabilities; a UserError naming the first record without them."""
    missing = [r.id for r in records if not r.verdict_probs]
    if missing:
        raise UserError(
            f"the cascade needs verdict-first student records (verdict_probs in every record); {len(missing)} lack "
            f"them (e.g. {missing[:3]}): generate them with sampling.verdict.enabled: true"
        )
    return [dict(r.verdict_probs) for r in records]  # type: ignore[arg-type]


def cascade_matrix(probs: list[dict[str, float]], bias: dict[str, float]) -> np.ndarray:
    rows = [cascade_features(p, bias) for p in probs]
    return np.array([[row[name] for name in FEATURES] for row in rows], dtype=float)


def escalation_waste_s(records: list[AnswerRecord]) -> np.ndarray:
    """Measured seconds of each student record's verdict step: what an escalation throws away."""
    return np.array([float(r.timings.get("verdict", 0.0)) for r in records])


def _estimator(cfg: RouterConfig) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(C=cfg.cascade.C, class_weight="balanced", max_iter=1000)
    )


def out_of_fold_cascade_scores(X: np.ndarray, y: np.ndarray, cfg: RouterConfig) -> np.ndarray:
    """P(teacher needed) of every question from a rule fitted on the other folds."""
    from sklearn.model_selection import StratifiedKFold

    scores = np.empty(len(y))
    for train, held in StratifiedKFold(cfg.cv_folds, shuffle=True, random_state=cfg.seed).split(X, y):
        scores[held] = _estimator(cfg).fit(X[train], y[train]).predict_proba(X[held])[:, 1]
    return scores


def fit_cascade(labelled: LabelledSet, student: list[AnswerRecord], cfg: RouterConfig) -> tuple[CascadeRule, np.ndarray]:
    """The rule fitted on every question (threshold from out-of-fold scores), and those out-of-fold scores."""
    from router.fit import check_labels

    y = labelled.teacher_needed.astype(int)
    check_labels(y, cfg)
    X = cascade_matrix(student_verdict_probs(student), cfg.cascade.student_bias)
    oof = out_of_fold_cascade_scores(X, y, cfg)
    threshold = choose_threshold(
        cfg.threshold_rule, cfg.threshold_target, oof, labelled.student_quality, labelled.teacher_quality
    )
    pipeline = _estimator(cfg).fit(X, y)
    scaler, logreg = pipeline[0], pipeline[-1]
    # Fold the scaler into the weights: w' = w / sigma, b' = b - sum(w * mu / sigma).
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    weights = logreg.coef_[0] / scale
    intercept = float(logreg.intercept_[0] - np.sum(logreg.coef_[0] * scaler.mean_ / scale))
    rule = CascadeRule(
        weights={name: float(w) for name, w in zip(FEATURES, weights, strict=True)},
        intercept=intercept,
        threshold=float(threshold),
        student_bias=dict(cfg.cascade.student_bias),
        metadata={
            "n_train": len(y), "n_hard": int(y.sum()), "data_hash": labelled.data_hash,
            "validation_teacher_share": float(np.mean(needs_teacher(oof, threshold))),
            "threshold_rule": cfg.threshold_rule, "threshold_target": cfg.threshold_target,
            **provenance(cfg),
        },
    )
    return rule, oof
