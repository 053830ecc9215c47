"""The artifact layer: what stages hand each other, typed, each with ``save`` / ``load``.

- :class:`RecordsRun` (data_gen → train, router, eval): ``records.jsonl`` + ``manifest.json``;
- :class:`Checkpoint` (``ragroute train`` / ``models prepare`` → data_gen, eval, serve): a model directory and
  its ``ragroute_model.json`` marker;
- :class:`RouterFile` (``router fit`` → serve, eval): the skops file of a fitted router;
- :class:`CascadeRule` (``router fit-cascade`` → serve, eval): the cascade rule's JSON (:mod:`ragroute.cascade`).

All of them are written through :mod:`ragroute.artifacts.io`: one atomic writer (files and directories), one
canonical JSON hash (:func:`content_hash`) and one provenance block (:func:`provenance`: library versions, the
system spec, the config). docs/DEVELOPING.md describes how a new stage's artifact joins them.
"""

from __future__ import annotations

from typing import Any

from ragroute.artifacts.checkpoint import MARKER_FILE, Checkpoint
from ragroute.artifacts.io import (
    canonical_json,
    content_hash,
    library_versions,
    provenance,
    write_atomic,
    write_directory_atomic,
    write_json_atomic,
    write_text_atomic,
)
from ragroute.artifacts.records_run import RecordsRun, shard_paths
from ragroute.artifacts.router_file import RouterFile

__all__ = [
    "MARKER_FILE", "CascadeRule", "Checkpoint", "RecordsRun", "RouterFile", "canonical_json", "content_hash",
    "library_versions", "provenance", "shard_paths", "write_atomic", "write_directory_atomic", "write_json_atomic",
    "write_text_atomic",
]


def __getattr__(name: str) -> Any:
    # ragroute.cascade writes through this package, so its rule is re-exported lazily (no import cycle).
    if name == "CascadeRule":
        from ragroute.cascade import CascadeRule

        return CascadeRule
    raise AttributeError(name)
