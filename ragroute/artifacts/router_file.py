"""A fitted router's file: skops, never pickle.

The file holds one dict of plain values and standard scikit-learn objects: ``format``, ``estimator`` (the
feature pipeline and classifier), ``threshold`` and ``metadata_json`` (format and feature versions, the provenance
block's library ``versions``, the config, the training-data hash). Loading checks every type in the file against
skops' trusted set plus :data:`REVIEWED_TYPES` before anything is built, so a file from elsewhere cannot run
code: a file naming any other type is refused with :class:`UserError`. Tree models (gboost) store raw node
indices that scikit-learn does not bounds-check, so skops flags them; they load only when the caller names them
in ``trusted``. What the estimator computes (features, scoring) is the router stage's
(:class:`router.persist.RouterBundle`); this module only writes and reads the file.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.artifacts.io import write_atomic
from ragroute.errors import UserError

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


@dataclass
class RouterFile:
    """The content of a router file: a scikit-learn Pipeline, its decision threshold and its metadata."""

    estimator: Any
    threshold: float
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the file with skops, atomically."""
        import skops.io as sio

        payload = {
            "format": FORMAT,
            "estimator": self.estimator,
            "threshold": float(self.threshold),
            "metadata_json": json.dumps(self.metadata, sort_keys=True),
        }
        self.path = write_atomic(path, lambda tmp: sio.dump(payload, tmp))
        return self.path

    @classmethod
    def load(cls, path: str | os.PathLike[str], trusted: Sequence[str] = ()) -> RouterFile:
        """Load a router file safely. ``trusted``: extra types you reviewed (e.g. ``sklearn.tree._tree.Tree`` for
        a gboost router you fitted yourself); anything else skops does not trust is refused."""
        import skops.io as sio
        from sklearn.pipeline import Pipeline

        p = Path(path)
        if not p.is_file():
            raise UserError(f"router file not found: {path}")
        found = _untrusted_types(p, trusted)
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
        return cls(estimator, threshold, metadata, p)


def _untrusted_types(path: Path, trusted: Sequence[str]) -> set[str]:
    """The types skops does not trust in ``path``; a UserError when any is neither reviewed nor ``trusted``."""
    import skops.io as sio

    try:
        found = set(sio.get_untrusted_types(file=path))
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
    return found


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
    """The file's format and scikit-learn minor version must be this ragroute's (the router stage checks the
    feature version it computes)."""
    import sklearn

    if metadata.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{path}: router file format {metadata.get('format_version')} is not the supported {FORMAT_VERSION}; "
            "refit it with `ragroute router fit`"
        )
    saved = str(metadata.get("versions", {}).get("scikit-learn", "?"))
    if saved.split(".")[:2] != sklearn.__version__.split(".")[:2]:
        raise UserError(
            f"{path}: router was fitted with scikit-learn {saved}, this environment has {sklearn.__version__}; "
            "refit it (or install the same scikit-learn minor version)"
        )
