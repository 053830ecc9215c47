"""A fitted router and its file: skops, never pickle.

The file holds one dict of plain values and standard scikit-learn objects: ``format``, ``estimator`` (the
feature pipeline and classifier), ``threshold`` and ``metadata_json`` (feature version, library versions, the
config, the training-data hash). Loading checks every type in the file against skops' trusted set plus
:data:`REVIEWED_TYPES` before anything is built, so a file from elsewhere cannot run code: a file naming any
other type is refused with :class:`UserError`. Tree models (gboost) store raw node indices that scikit-learn
does not bounds-check, so skops flags them; they load only when the caller names them in ``trusted``.
"""

from __future__ import annotations

import json
import os
import platform
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.errors import UserError
from ragroute.routing import needs_teacher
from router.config import FeatureConfig
from router.features import FEATURE_VERSION, feature_matrix
from router.linear import LinearScorer, binary_calibrated_parts

FORMAT = "ragroute-router"
FORMAT_VERSION = 1

# scikit-learn/scipy types skops does not trust by default that a router file needs, reviewed as plain data:
# the calibration wrappers hold a fitted estimator and sigmoid/isotonic parameters; the CSR matrix (kNN's stored
# training questions) is checked in full after loading (`_check_sparse`).
REVIEWED_TYPES = frozenset(
    {
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "scipy.sparse._csr.csr_matrix",
    }
)
TREE_TYPES = ("sklearn.tree._tree.Tree",)


def library_versions() -> dict[str, str]:
    import scipy
    import sklearn
    import skops

    from ragroute import __version__

    return {
        "ragroute": __version__,
        "scikit-learn": sklearn.__version__,
        "skops": skops.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }


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
    """Write the bundle with skops (atomically: a temporary file renamed into place)."""
    import skops.io as sio

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "estimator": bundle.estimator,
        "threshold": float(bundle.threshold),
        "metadata_json": json.dumps(bundle.metadata, sort_keys=True),
    }
    tmp = target.with_name(f".{target.name}.tmp")
    sio.dump(payload, tmp)
    os.replace(tmp, target)
    return target


def _check_sparse(obj: Any, depth: int = 0) -> None:
    """Full structural check of every sparse matrix reachable from the loaded estimator (indices in range)."""
    import scipy.sparse as sp

    if depth > 8:
        return
    if sp.issparse(obj):
        try:
            obj.check_format(full_check=True)
        except ValueError as exc:
            raise UserError(f"router file holds a malformed sparse matrix: {exc}") from None
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _check_sparse(item, depth + 1)
    elif isinstance(obj, dict):
        for item in obj.values():
            _check_sparse(item, depth + 1)
    elif type(obj).__module__.startswith("sklearn."):
        for item in getattr(obj, "__dict__", {}).values():
            _check_sparse(item, depth + 1)


def _check_versions(metadata: dict[str, Any], path: Path) -> None:
    import sklearn

    if metadata.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{path}: router file format {metadata.get('format_version')} is not the supported {FORMAT_VERSION}; "
            "refit it with `ragroute router fit`"
        )
    if metadata.get("feature_version") != FEATURE_VERSION:
        raise UserError(
            f"{path}: router was fitted with feature version {metadata.get('feature_version')}, this ragroute computes "
            f"version {FEATURE_VERSION}; refit it with `ragroute router fit`"
        )
    saved = str(metadata.get("versions", {}).get("scikit-learn", "?"))
    if saved.split(".")[:2] != sklearn.__version__.split(".")[:2]:
        raise UserError(
            f"{path}: router was fitted with scikit-learn {saved}, this environment has {sklearn.__version__}; "
            "refit it (or install the same scikit-learn minor version)"
        )


def load_router(path: str | os.PathLike[str], trusted: Sequence[str] = ()) -> RouterBundle:
    """Load a router file safely. ``trusted``: extra types you reviewed (e.g. ``sklearn.tree._tree.Tree`` for a
    gboost router you fitted yourself); anything else skops does not trust is refused."""
    import skops.io as sio
    from sklearn.pipeline import Pipeline

    p = Path(path)
    if not p.is_file():
        raise UserError(f"router file not found: {path}")
    try:
        found = set(sio.get_untrusted_types(file=p))
    except (zipfile.BadZipFile, KeyError, ValueError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not a skops router file ({type(exc).__name__}: {exc})") from None
    refused = sorted(found - REVIEWED_TYPES - set(trusted))
    if refused:
        hint = ""
        if set(refused) <= set(TREE_TYPES):
            hint = (
                " Tree models store node indices that are not bounds-checked; if you fitted this file yourself, "
                f"load it with trusted={list(TREE_TYPES)} (CLI: --trust {TREE_TYPES[0]})."
            )
        raise UserError(f"{path}: refusing to load types that are not trusted: {refused}.{hint}")
    try:
        payload = sio.load(p, trusted=sorted(found))
    except Exception as exc:  # skops raises many types for a damaged file (TypeError, KeyError, ValueError, ...)
        raise UserError(f"{path}: damaged router file ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is a skops file but not a ragroute router (fit one with `ragroute router fit`)")
    try:
        metadata = json.loads(payload["metadata_json"])
        threshold = float(payload["threshold"])
        estimator = payload["estimator"]
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: router file lacks its metadata or threshold ({exc})") from None
    if not isinstance(estimator, Pipeline):
        raise UserError(f"{path}: the router's estimator is a {type(estimator).__name__}, not a scikit-learn Pipeline")
    _check_versions(metadata, p)
    _check_sparse(estimator)
    return RouterBundle(estimator, threshold, metadata)
