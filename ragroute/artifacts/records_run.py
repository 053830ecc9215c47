"""A data_gen run as an artifact: its records file and the manifest beside it (what made them, how far it got)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.artifacts.io import write_json_atomic
from ragroute.errors import UserError
from ragroute.records import SCHEMA_VERSION, AnswerRecord, iter_jsonl

RECORDS_FILE = "records.jsonl"
MANIFEST_FILE = "manifest.json"
_SHARD_RECORDS = re.compile(r"^records\.(shard-\d+-of-\d+)\.jsonl$")


def shard_paths(out: str | os.PathLike[str], index: int = 0, count: int = 1) -> tuple[Path, Path]:
    """(records file, manifest file) of shard ``index`` of ``count`` in directory ``out`` (one shard: the plain
    ``records.jsonl`` and ``manifest.json``)."""
    out = Path(out)
    if count == 1:
        return out / RECORDS_FILE, out / MANIFEST_FILE
    suffix = f"shard-{index}-of-{count}"
    return out / f"records.{suffix}.jsonl", out / f"manifest.{suffix}.json"


def manifest_beside(records: Path) -> Path:
    """The manifest that describes a records file: a shard's own, else ``manifest.json`` in its directory."""
    match = _SHARD_RECORDS.match(records.name)
    return records.parent / (f"manifest.{match[1]}.json" if match else MANIFEST_FILE)


@dataclass
class RecordsRun:
    """The records of one data_gen run (or shard) and its manifest.

    The manifest holds ``schema_version``, ``config_hash`` (the hash of what decides the answers; every record
    carries it too), ``identity`` (that content), the provenance block (``versions``, ``config``, ``system``,
    ``system_hash``, ``created``; :func:`ragroute.artifacts.io.provenance`), ``shard``, ``counts``, ``started``
    and ``updated``.
    """

    records_path: Path
    manifest_path: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def at(cls, out: str | os.PathLike[str], index: int = 0, count: int = 1) -> RecordsRun:
        """The (not yet written) run of shard ``index``/``count`` in ``out``."""
        return cls(*shard_paths(out, index, count))

    @classmethod
    def load(cls, path: str | os.PathLike[str], require_manifest: bool = False) -> RecordsRun:
        """A run from its directory or records file. A manifest of a newer schema is refused; a missing one is an
        empty manifest (records written by hand or by a test), or an error when ``require_manifest``."""
        p = Path(path).expanduser()
        records = p / RECORDS_FILE if p.is_dir() else p
        run = cls(records, manifest_beside(records))
        if run.manifest_path.is_file():
            run.manifest = run.read_manifest()
        elif require_manifest:
            raise UserError(f"{run.manifest_path} not found: {p} is not a data_gen output (run `ragroute data-gen`)")
        return run

    def read_manifest(self) -> dict[str, Any]:
        import json

        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.manifest_path} is not a data_gen manifest ({exc})") from None
        version = manifest.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise UserError(f"{self.manifest_path} has record schema {version}, newer than this ragroute reads "
                            f"({SCHEMA_VERSION}); upgrade ragroute, or regenerate the records with this one")
        return manifest

    def save(self) -> Path:
        """Write the manifest atomically (the records file is appended by :class:`ragroute.records.JsonlWriter`)."""
        return write_json_atomic(self.manifest_path, self.manifest)

    @property
    def system(self) -> dict[str, Any] | None:
        """The system that answered (the pipeline, model and sampling; :class:`ragroute.system.SystemSpec`)."""
        return self.manifest.get("system")

    @property
    def config_hash(self) -> str | None:
        return self.manifest.get("config_hash")

    @property
    def counts(self) -> dict[str, Any]:
        return self.manifest.get("counts", {})

    def iter_records(self) -> Iterator[AnswerRecord]:
        return (AnswerRecord.from_dict(d) for d in iter_jsonl(self.records_path))

    def records(self) -> list[AnswerRecord]:
        return list(self.iter_records())
