"""The system spec: everything that decides what answer a question gets, as one typed object with a stable hash.

A :class:`SystemSpec` is the RAG pipeline (corpus, retrieval, rerank, filter, prompt template and instruction),
the model and the sampling. Every artifact records the system it came from in full: a data_gen manifest
(``system``, ``system_hash``), a train report and its checkpoint (``data_system``: the system that wrote the
training data) and a router file (``systems``: the teacher's and the student's, from the records its labels were
made of). serve and eval build themselves from those records (:func:`resolve_system`): a part left unset is
taken from the artifact; a part set differently is an error naming every difference, unless the run says
``system_override`` (then it is logged and reported).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragroute.config import config_to_dict
from ragroute.engines.base import SamplingConfig
from ragroute.errors import UserError
from ragroute.models import ModelSpec
from ragroute.rag.config import PipelineConfig

log = logging.getLogger("ragroute.system")

# Pipeline settings that change how fast or where the work runs, not which answers come out.
EXECUTION_ONLY = frozenset({"index_dir", "query_threads", "dense_batch_size", "device", "bm25_backend",
                            "implicit_index_max_docs"})
# Pipeline settings that only act on a built index (``index``): left out of the record without one, so systems
# recorded before built indexes existed keep their hash.
BUILT_INDEX_ONLY = ("index", "nprobe", "ef_search", "refine_k")
# What names a model's weights; the rest of a ModelSpec is display (name, description) or loading detail.
MODEL_IDENTITY = ("path", "tokenizer", "revision")
MODEL_RECORDED = (*MODEL_IDENTITY, "name", "dtype", "max_model_len")
# Sampling settings that do not change the answer text, or are set per step by the engine layer.
SAMPLING_EXTRAS = frozenset({"logprobs", "allowed_token_ids", "logprob_token_ids"})


def sampling_record(sampling: SamplingConfig) -> dict[str, Any]:
    """The sampling as artifacts record it: without the per-step extras, and without the verdict settings when
    verdict-first answers are off (so systems recorded before they existed keep their hash)."""
    record = {k: v for k, v in config_to_dict(sampling).items() if k not in SAMPLING_EXTRAS}
    if not sampling.verdict.enabled:
        record.pop("verdict", None)
    return record


def pipeline_record(pipeline: PipelineConfig) -> dict[str, Any]:
    """The pipeline as artifacts record it; with a built index, also that index's identity (store fingerprint,
    engines, embedding model, FAISS factory and default knobs), read from its manifest."""
    record = {k: v for k, v in config_to_dict(pipeline).items() if k not in EXECUTION_ONLY}
    if not pipeline.index:
        return {k: v for k, v in record.items() if k not in BUILT_INDEX_ONLY}
    from ragroute.rag.built_index import index_identity, read_index_manifest

    try:
        record["index_identity"] = index_identity(read_index_manifest(pipeline.index))
    except UserError:
        record["index_identity"] = None  # not on this machine: the paths then stand for it
    return record


@dataclass
class SystemSpec:
    """What makes an answer: the pipeline, the model and the sampling."""

    model: ModelSpec
    pipeline: PipelineConfig
    sampling: SamplingConfig

    def to_dict(self) -> dict[str, Any]:
        """The full record (what artifacts store)."""
        model = config_to_dict(self.model)
        return {
            "model": {key: model[key] for key in MODEL_RECORDED},
            "pipeline": pipeline_record(self.pipeline),
            "sampling": sampling_record(self.sampling),
        }

    def identity(self) -> dict[str, Any]:
        """What decides the answers: the record without the model's display and loading details."""
        return identity_of(self.to_dict())

    def hash(self) -> str:
        return system_hash(self.to_dict())

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> SystemSpec:
        try:
            return cls(model=ModelSpec(**record["model"]), pipeline=_build(PipelineConfig, record["pipeline"]),
                       sampling=_build(SamplingConfig, record["sampling"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"a recorded system is unusable ({type(exc).__name__}: {exc})") from None


def _build(cls: type, values: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


def identity_of(record: dict[str, Any]) -> dict[str, Any]:
    """What decides the answers. With a built index's identity the store and index paths are only where they
    are: a copy of the same store and index elsewhere is the same system."""
    pipeline = record.get("pipeline", {})
    if pipeline.get("index_identity"):
        pipeline = {k: v for k, v in pipeline.items() if k not in ("corpus", "index")}
    return {**record, "model": {k: record["model"].get(k) for k in MODEL_IDENTITY}, "pipeline": pipeline}


def system_hash(record: dict[str, Any]) -> str:
    """A short stable hash of a recorded system's identity."""
    return hashlib.sha256(json.dumps(identity_of(record), sort_keys=True).encode()).hexdigest()[:12]


def differences(served: dict[str, Any], recorded: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: served vs recorded`` for every dotted key whose value differs."""
    found = []
    for key in sorted(set(served) | set(recorded)):
        a, b = served.get(key), recorded.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found.extend(differences(a, b, f"{prefix}{key}."))
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} vs {b!r}")
    return found


def manifest_system(records: str | Path) -> dict[str, Any] | None:
    """The system recorded in the data_gen manifest beside ``records`` (a directory or its records file)."""
    path = Path(records)
    manifest = (path if path.is_dir() else path.parent) / "manifest.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("system")


def checkpoint_data_system(model_path: str) -> dict[str, Any] | None:
    """The system that wrote a distilled checkpoint's training data (``ragroute train`` records it)."""
    from ragroute.models import MARKER_FILE

    marker = Path(model_path).expanduser() / MARKER_FILE
    if not marker.is_file():
        return None
    return json.loads(marker.read_text()).get("data_system")


@dataclass
class Resolved:
    """The system to run for one role, where it came from, and any accepted differences (an override)."""

    spec: SystemSpec
    source: str | None
    differences: list[str]

    def info(self) -> dict[str, Any]:
        return {"hash": self.spec.hash(), "from": self.source, "override": self.differences or None}


def resolve_system(what: str, model: ModelSpec | None, pipeline: PipelineConfig | None,
                   sampling: SamplingConfig | None, recorded: dict[str, Any] | None, source: str | None,
                   override: bool) -> Resolved:
    """The system for ``what`` (e.g. 'student'): each part as configured, else as ``recorded`` by the artifact at
    ``source``, else the defaults. A configured part that differs from the record is a :class:`UserError` naming
    every difference, unless ``override`` (then logged, and kept in :attr:`Resolved.differences`)."""
    base = SystemSpec.from_dict(recorded) if recorded else None
    if model is None and base is None:
        raise UserError(f"{what}: no model configured and no artifact records one (set {what}.model, or give the "
                        "router file its labels came from)")
    spec = SystemSpec(model=model or base.model, pipeline=pipeline or (base.pipeline if base else PipelineConfig()),
                      sampling=sampling or (base.sampling if base else SamplingConfig()))
    found = differences(spec.identity(), identity_of(recorded)) if recorded else []
    if found and not override:
        raise UserError(
            f"{what}: the configured system differs from the one {source} was made with ({'; '.join(found)}). "
            "Leave those settings unset to take the recorded ones, or set system_override: true to run anyway"
        )
    if found:
        log.warning("%s: system override, differs from %s: %s", what, source, "; ".join(found))
    elif recorded:
        log.info("%s: system %s as recorded by %s", what, spec.hash(), source)
    return Resolved(spec, source, found)
