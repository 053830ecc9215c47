"""A fitted router (:class:`RouterBundle`) and its file (:class:`ragroute.artifacts.RouterFile`: skops, never pickle,
every type checked before anything is built).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.artifacts.router_file import RouterFile
from ragroute.errors import UserError
from ragroute.routing import needs_teacher
from router.config import FeatureConfig
from router.features import FEATURE_VERSION, feature_matrix
from router.linear import LinearScorer, binary_calibrated_parts


class RouterBundle:
    """A fitted router: ``score`` questions (P(teacher needed)), ``route`` one question against the threshold."""

    def __init__(self, estimator: Any, threshold: float, metadata: dict[str, Any]) -> None:
        self.estimator = estimator
        self.threshold = float(threshold)
        self.metadata = metadata
        self.feature_config = FeatureConfig(**metadata["config"]["features"])
        self.signal_defaults: dict[str, float] = dict(metadata.get("signal_defaults", {}))
        self.linear = LinearScorer.from_pipeline(estimator)  # None for non-linear classifiers (gboost, kNN)

    def features(
        self, questions: Sequence[str], signals: Sequence[dict[str, float] | None] | None = None
    ) -> np.ndarray:
        return feature_matrix(questions, signals, self.feature_config, self.signal_defaults)

    def score(
        self, questions: Sequence[str], signals: Sequence[dict[str, float] | None] | None = None
    ) -> np.ndarray:
        """P(teacher needed) for each question; missing retrieval signals take the training medians."""
        if isinstance(questions, str):
            raise TypeError("score() takes a list of questions; use route() for one")
        if len(questions) == 0:
            return np.empty(0)
        return self._predict(self.features(questions, signals))

    def route(self, question: str, signals: dict[str, float] | None = None) -> tuple[bool, float]:
        """(use_teacher, score) for one question."""
        score = float(self._predict(self.features([question], None if signals is None else [signals]))[0])
        return bool(needs_teacher(score, self.threshold)), score

    def _predict(self, matrix: np.ndarray) -> np.ndarray:
        """The pipeline's ``predict_proba(matrix)[:, 1]``: a linear router's folded weights (:mod:`router.linear`),
        else the fitted parts called directly.

        A one-question decision through ``Pipeline.predict_proba`` spends most of its ~2 ms on input checks and
        dispatch (ColumnTransformer column handling, CalibratedClassifierCV's label encoding per call). The same
        numbers come from applying each fitted transformer to its columns, stacking the parts as CSR, and for a
        calibrated binary classifier feeding its decision values to the one calibrator, which is what
        ``_CalibratedClassifier.predict_proba`` computes for two classes. Tests compare both paths.
        """
        if self.linear is not None:
            return self.linear.score(matrix)
        import scipy.sparse as sp
        from sklearn import config_context

        columns, classifier = self.estimator.steps[0][1], self.estimator.steps[-1][1]
        with config_context(assume_finite=True, skip_parameter_validation=True):
            parts = [
                transformer.transform(matrix[:, selection])
                for name, transformer, selection in columns.transformers_
                if name != "remainder"
            ]
            if any(sp.issparse(part) for part in parts):
                # All-CSR blocks take scipy's fast path; a dense block would send every part through COO.
                features = sp.hstack([sp.csr_matrix(part) for part in parts], format="csr")
            else:
                features = np.hstack(parts)
            calibrated = binary_calibrated_parts(classifier)
            if calibrated is not None:
                inner, calibrator = calibrated
                if hasattr(inner, "decision_function"):
                    raw = inner.decision_function(features)
                else:
                    raw = inner.predict_proba(features)[:, 1]
                return np.asarray(calibrator.predict(raw), dtype=float)
            return classifier.predict_proba(features)[:, 1]


def save_router(bundle: RouterBundle, path: str | os.PathLike[str]) -> Path:
    """Write the bundle's router file (:meth:`RouterFile.save`: skops, atomically)."""
    return RouterFile(bundle.estimator, bundle.threshold, bundle.metadata).save(path)


def load_router(path: str | os.PathLike[str], trusted: Sequence[str] = ()) -> RouterBundle:
    """Load a router file safely (:meth:`RouterFile.load`; ``trusted``: extra types you reviewed, e.g.
    ``sklearn.tree._tree.Tree`` for a gboost router you fitted yourself) whose features this ragroute computes."""
    file = RouterFile.load(path, trusted)
    if file.metadata.get("feature_version") != FEATURE_VERSION:
        raise UserError(
            f"{path}: router was fitted with feature version {file.metadata.get('feature_version')}, this ragroute "
            f"computes version {FEATURE_VERSION}; refit it with `ragroute router fit`"
        )
    return RouterBundle(file.estimator, file.threshold, file.metadata)
