"""Fitting a router: cross-validated model selection, probability calibration, out-of-fold scores, threshold.

The estimator is one scikit-learn Pipeline: the feature ColumnTransformer, then the registry's classifier wrapped
in CalibratedClassifierCV (``ensemble=False``: one classifier refit on all data plus a calibrator fitted on
cross-validated predictions, so a decision runs one model). Hyper-parameters are chosen by GridSearchCV on ROC
AUC (the router only needs to rank questions). Out-of-fold scores repeat the whole procedure on each training
split and score the held-out split: they choose the threshold, and they are what `router eval` reports.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ragroute.artifacts import library_versions
from ragroute.artifacts.router_file import FORMAT_VERSION
from ragroute.config import config_to_dict
from ragroute.errors import UserError
from ragroute.routing import needs_teacher
from router.calibrate import choose_threshold
from router.config import RouterConfig
from router.features import FEATURE_VERSION, SIGNAL_NAMES, column_transformer, feature_matrix
from router.labels import LabelledSet
from router.models import CLASSIFIERS
from router.persist import RouterBundle

log = logging.getLogger("ragroute.router")


def _folds(y: np.ndarray, cfg: RouterConfig) -> Any:
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=cfg.cv_folds, shuffle=True, random_state=cfg.seed)


def check_labels(y: np.ndarray, cfg: RouterConfig) -> None:
    """Both labels present, and the rarer one common enough for nested folds: each out-of-fold training split
    must still hold ``cv_folds`` of it for model selection and calibration."""
    hard = int(y.sum())
    fewest = min(hard, len(y) - hard)
    if fewest == 0:
        kind = "hard (teacher needed)" if hard == len(y) else "simple (student good enough)"
        raise UserError(f"all {len(y)} questions are labelled {kind}: there is nothing for a router to learn")
    if fewest - -(-fewest // cfg.cv_folds) < cfg.cv_folds:
        raise UserError(
            f"only {fewest} questions of the rarer label among {len(y)}: too few for {cfg.cv_folds}-fold nested "
            "cross-validation (use more questions, fewer cv_folds, or another labels.tolerance)"
        )


def _pipeline(cfg: RouterConfig, model: str, n_numeric: int, calibrated: bool, params: dict[str, Any]) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline

    classifier = CLASSIFIERS[model].make(cfg.seed).set_params(**params)
    if calibrated and cfg.calibration != "none":
        classifier = CalibratedClassifierCV(classifier, method=cfg.calibration, cv=cfg.cv_folds, ensemble=False)
    return Pipeline([("features", column_transformer(cfg.features, n_numeric)), ("classifier", classifier)])


def select_params(X: np.ndarray, y: np.ndarray, cfg: RouterConfig, model: str) -> tuple[dict[str, Any], float | None]:
    """The grid point with the best cross-validated ROC AUC, and that AUC (None without a grid)."""
    from sklearn.model_selection import GridSearchCV

    grid = cfg.param_grid if (cfg.param_grid and model == cfg.model) else CLASSIFIERS[model].param_grid
    if not grid or all(len(values) == 1 for values in grid.values()):
        return {k: v[0] for k, v in grid.items()}, None
    n_numeric = X.shape[1] - 1
    search = GridSearchCV(
        _pipeline(cfg, model, n_numeric, calibrated=False, params={}),
        {f"classifier__{k}": list(v) for k, v in grid.items()},
        scoring="roc_auc",
        cv=_folds(y, cfg),
        n_jobs=1,
        error_score="raise",
    )
    try:
        search.fit(X, y)
    except ValueError as exc:
        raise UserError(f"router param_grid for '{model}' does not fit: {exc}") from None
    best = {k.removeprefix("classifier__"): v for k, v in search.best_params_.items()}
    return best, float(search.best_score_)


def fit_estimator(X: np.ndarray, y: np.ndarray, cfg: RouterConfig, model: str) -> tuple[Any, dict[str, Any], float | None]:
    """Select hyper-parameters, then fit the calibrated pipeline on all of ``X``."""
    params, cv_auc = select_params(X, y, cfg, model)
    estimator = _pipeline(cfg, model, X.shape[1] - 1, calibrated=True, params=params)
    estimator.fit(X, y)
    return estimator, params, cv_auc


def out_of_fold_scores(X: np.ndarray, y: np.ndarray, cfg: RouterConfig, model: str) -> np.ndarray:
    """P(teacher needed) of every question from a router fitted without it (the whole procedure per fold)."""
    scores = np.empty(len(y))
    for train, held_out in _folds(y, cfg).split(X, y):
        estimator, _, _ = fit_estimator(X[train], y[train], cfg, model)
        scores[held_out] = estimator.predict_proba(X[held_out])[:, 1]
    return scores


def signal_medians(signals: list[dict[str, float]]) -> dict[str, float]:
    """Per-signal training medians: what a question without retrieval signals is scored with."""
    return {name: float(np.median([s.get(name, 0.0) for s in signals])) for name in SIGNAL_NAMES}


def fit_router(labelled: LabelledSet, cfg: RouterConfig, model: str | None = None) -> RouterBundle:
    """Fit ``model`` (default ``cfg.model``) on the labelled questions; threshold from out-of-fold scores."""
    model = model or cfg.model
    y = labelled.teacher_needed.astype(int)
    check_labels(y, cfg)
    started = time.perf_counter()
    defaults = signal_medians(labelled.signals)
    X = feature_matrix(labelled.questions, labelled.signals, cfg.features, defaults)
    oof = out_of_fold_scores(X, y, cfg, model)
    threshold = choose_threshold(
        cfg.threshold_rule, cfg.threshold_target, oof, labelled.student_quality, labelled.teacher_quality
    )
    estimator, params, cv_auc = fit_estimator(X, y, cfg, model)
    log.info(f"router {model}: fitted on {len(y)} questions ({int(y.sum())} hard) in {time.perf_counter() - started:.1f}s")
    metadata = {
        "format_version": FORMAT_VERSION,
        "feature_version": FEATURE_VERSION,
        "model": model,
        "params": params,
        "cv_roc_auc": cv_auc,
        "config": config_to_dict(cfg),
        "signal_defaults": defaults,
        "threshold_rule": cfg.threshold_rule,
        "threshold_target": cfg.threshold_target,
        "validation_teacher_share": float(np.mean(needs_teacher(oof, threshold))),
        "n_train": len(y),
        "n_hard": int(y.sum()),
        "data_hash": labelled.data_hash,
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return RouterBundle(estimator, threshold, metadata)
