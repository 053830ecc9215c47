"""The manifest beside every records file: what produced it (config, model, versions) and how far it got.

It is the ``manifest`` of a :class:`ragroute.artifacts.RecordsRun`, written through the artifact layer."""

from __future__ import annotations

import time
from typing import Any

from ragroute.artifacts import RecordsRun, content_hash, provenance
from ragroute.config import config_to_dict
from ragroute.errors import UserError
from ragroute.records import SCHEMA_VERSION
from ragroute.system import SystemSpec, pipeline_record, sampling_record

# Model fields added after 0.1.0: recorded only when set, so a run an earlier release started keeps its hash.
LATER_MODEL_FIELDS = ("tokenizer_package", "random_init")


def output_identity(cfg: Any, model_spec: Any) -> dict[str, Any]:
    """The settings that decide what the answers are; a resumed run must match them. The stored logprobs are
    recorded under ``top_logprobs`` (the key earlier releases had), so a run started by one resumes."""
    model = {k: v for k, v in config_to_dict(model_spec).items() if not (k in LATER_MODEL_FIELDS and v is None)}
    return {
        "model": model,
        "pipeline": pipeline_record(cfg.pipeline),
        "sampling": {**sampling_record(cfg.sampling), "logprobs": None},
        "top_logprobs": cfg.sampling.logprobs,
        "engine": {"name": cfg.engine.name, "quantization": cfg.engine.vllm.quantization},
        "questions": str(cfg.questions),
        "corpus": str(cfg.corpus),
        "schema_version": SCHEMA_VERSION,
    }


def identity_hash(identity: dict[str, Any]) -> str:
    """The run's ``config_hash``: the canonical hash of its identity, stamped on the manifest and every record."""
    return content_hash(identity)


def check_resumable(run: RecordsRun, config_hash: str, overwrite: bool) -> bool:
    """True if the run's records may be extended; refuse to mix answers of two configs."""
    if not run.manifest_path.exists():
        return True
    previous = run.read_manifest().get("config_hash")
    if previous == config_hash:
        return True
    if overwrite:
        return False
    raise UserError(
        f"{run.manifest_path.parent} holds records made with a different config (hash {previous}, "
        f"now {config_hash}); use another --out, or --overwrite to start it afresh (ragroute demo: --fresh)"
    )


def run_system(cfg: Any, model_spec: Any) -> SystemSpec:
    """The system this run answers with; its pipeline names the corpus the run actually retrieves from."""
    from dataclasses import replace

    corpus = cfg.corpus or cfg.pipeline.corpus or cfg.questions
    return SystemSpec(model=model_spec, pipeline=replace(cfg.pipeline, corpus=corpus), sampling=cfg.sampling)


def write_manifest(run: RecordsRun, cfg: Any, identity: dict, counts: dict, started: float,
                   system: SystemSpec) -> RecordsRun:
    """Fill ``run.manifest`` (the provenance block, the identity and its hash, the counts) and write it."""
    run.manifest = {
        "schema_version": SCHEMA_VERSION,
        "config_hash": identity_hash(identity),
        **provenance(cfg, system),
        "identity": identity,
        "shard": cfg.shard,
        "counts": counts,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
    }
    run.save()
    return run
