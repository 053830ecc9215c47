"""The router interface, the registry of trainable classifiers, and the baselines.

Every router answers one question (:class:`ragroute.routing.Router`, RouteLLM's interface):
``score(questions, signals)`` -> the probability that the teacher is needed, one number per question;
:func:`ragroute.routing.needs_teacher` on a threshold makes the decision. Trained routers are a
scikit-learn classifier from :data:`CLASSIFIERS` behind the feature pipeline (:class:`router.persist.RouterBundle`);
the baselines need no training. Classifiers are built by factories so that importing this module stays free of
scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragroute.registry import Registry
from ragroute.routing import HeuristicRouter, Router

__all__ = ["BASELINES", "CLASSIFIERS", "ClassifierSpec", "HeuristicRouter", "RandomRouter", "Router"]


@dataclass
class ClassifierSpec:
    """A classifier family: a factory (seed -> unfitted estimator) and the grid searched by cross-validation."""

    make: Callable[[int], Any]
    param_grid: dict[str, list[Any]] = field(default_factory=dict)
    description: str = ""


def _logreg(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    # liblinear: exact and fast on a few thousand sparse TF-IDF columns and hundreds of questions.
    return LogisticRegression(solver="liblinear", class_weight="balanced", max_iter=1000, random_state=seed)


def _gboost(seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(n_estimators=100, max_depth=3, subsample=0.8, random_state=seed)


def _knn(seed: int) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    # Brute force with cosine distance suits sparse TF-IDF, and keeps no tree structure in the saved file.
    return KNeighborsClassifier(n_neighbors=25, weights="distance", algorithm="brute", metric="cosine")


CLASSIFIERS: Registry[ClassifierSpec] = Registry("router model", {
    "logreg": ClassifierSpec(_logreg, {"C": [0.1, 0.3, 1.0, 3.0, 10.0]}, "logistic regression (default)"),
    "gboost": ClassifierSpec(_gboost, {"learning_rate": [0.05, 0.1]}, "gradient-boosted trees"),
    "knn": ClassifierSpec(_knn, {"n_neighbors": [10, 25, 50]}, "k nearest questions (cosine)"),
})


def register_classifier(name: str, spec: ClassifierSpec) -> None:
    """Make a classifier family available to configs by name."""
    CLASSIFIERS[name] = spec


class RandomRouter:
    """Every question scores the same: the routed share is drawn at random. Curves computed on tied scores are
    the expectation over random tie-breaking, so this is the exact mean of random routing, not one draw."""

    def score(self, questions: Sequence[str], signals: Sequence[dict[str, float] | None] | None = None) -> np.ndarray:
        return np.full(len(questions), 0.5)


BASELINES: Registry[Callable[[], Router]] = Registry("baseline router", {"random": RandomRouter,
                                                                        "heuristic": HeuristicRouter})
