"""A model directory as an artifact: the weights and tokenizer plus the ragroute marker that says what made it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.artifacts.io import now_utc, write_directory_atomic
from ragroute.errors import UserError

MARKER_FILE = "ragroute_model.json"


@dataclass
class Checkpoint:
    """A prepared or distilled model directory. ``info`` is its marker (``ragroute_model.json``): ``kind``
    (prepared, pruned, distilled, ...), ``created`` and, for ``ragroute train``'s, ``config_hash``, ``student``,
    ``loss``, ``data_system`` (the system that wrote the training data) and the provenance ``versions``.
    ``report`` is the training run's ``train_report.json`` content when the checkpoint was just trained."""

    path: Path
    info: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] | None = None

    @staticmethod
    def is_prepared(directory: str | os.PathLike[str]) -> bool:
        return (Path(directory) / MARKER_FILE).exists()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Checkpoint:
        """The checkpoint at ``path``; a plain Hugging Face directory (no marker) has empty ``info``."""
        directory = Path(path).expanduser()
        marker = directory / MARKER_FILE
        if not marker.is_file():
            return cls(directory)
        try:
            return cls(directory, json.loads(marker.read_text()))
        except ValueError as exc:
            raise UserError(f"{marker} is damaged ({exc}); prepare or train the model again") from None

    @classmethod
    def save(cls, target: str | os.PathLike[str], write: Callable[[Path], dict[str, Any]],
             force: bool = False) -> Checkpoint | None:
        """Run ``write(tmp_dir)`` (it fills the directory and returns the marker's info) and move the result to
        ``target`` in one rename. None when ``target`` is already a prepared checkpoint and not ``force``."""
        target = Path(target)
        if cls.is_prepared(target) and not force:
            return None

        def fill(tmp: Path) -> dict[str, Any]:
            info = write(tmp)
            info.setdefault("created", now_utc())
            (tmp / MARKER_FILE).write_text(json.dumps(info, indent=2, default=str))
            return info

        return cls(target, write_directory_atomic(target, fill))

    @property
    def data_system(self) -> dict[str, Any] | None:
        """The system that wrote the training data of a distilled checkpoint."""
        return self.info.get("data_system")
