"""What serve serves: the system (pipeline, models, sampling) its artifacts were made with.

The router file records the teacher's and the student's systems (from the data_gen manifests of the records its
labels came from), and a distilled student's checkpoint records the system that wrote its training data. Every
part the serve config leaves unset is taken from them; a part it sets differently is an error unless
``system_override: true`` (then logged, and shown in ``/health``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from ragroute.errors import UserError
from ragroute.system import Resolved, checkpoint_data_system, differences, resolve_system
from serve.backends import model_spec_for
from serve.config import ServeConfig, check_answer_length

log = logging.getLogger("ragroute.serve")

ROLES = ("student", "teacher")


def _configured_pipeline(cfg: ServeConfig, recorded: dict[str, Any] | None) -> Any:
    from ragroute.rag.pipeline import PipelineConfig, load_pipeline_config
    from ragroute.system import SystemSpec

    pipeline = load_pipeline_config(cfg.pipeline) if cfg.pipeline else None
    if cfg.corpus:
        base = pipeline or (SystemSpec.from_dict(recorded).pipeline if recorded else PipelineConfig())
        pipeline = replace(base, corpus=cfg.corpus)
    return pipeline


def _check_training_data(cfg: ServeConfig, student: Resolved) -> list[str]:
    """Differences between the served pipeline/sampling and those that wrote the student's training data."""
    data = checkpoint_data_system(student.spec.model.path)
    if not data:
        return []
    served = student.spec.identity()
    found = [f"training data {d}" for d in differences(
        {k: served[k] for k in ("pipeline", "sampling")}, {k: data.get(k) or {} for k in ("pipeline", "sampling")})]
    if found and not cfg.system_override:
        raise UserError(f"student: the served pipeline/sampling differ from those that wrote the student's training "
                        f"data ({'; '.join(found)}); match them, or set system_override: true")
    if found:
        log.warning("student: system override, differs from its training data: %s", "; ".join(found))
    return found


def resolve_served(cfg: ServeConfig, bundle: Any | None) -> dict[str, Resolved]:
    """Each role's system, resolved against the router file's records (see :func:`ragroute.system.resolve_system`)."""
    recorded = (bundle.metadata.get("systems") or {}) if bundle is not None else {}
    source = f"the router file {cfg.routing.router_path}" if bundle is not None else None
    pipeline = _configured_pipeline(cfg, recorded.get("student"))
    sampling = cfg.sampling
    resolved: dict[str, Resolved] = {}
    for role in ROLES:
        backend = getattr(cfg, role)
        model = model_spec_for(backend) if backend.model or backend.engine.name == "openai" else None
        if model is not None and backend.engine.name == "openai" and not backend.model and recorded.get(role):
            model = None  # an upstream names no weights of its own: it serves the recorded model
        resolved[role] = resolve_system(role, model, pipeline, sampling, recorded.get(role), source,
                                        cfg.system_override)
        pipeline, sampling = resolved[role].spec.pipeline, resolved[role].spec.sampling  # one pipeline for both
    resolved["student"].differences += _check_training_data(cfg, resolved["student"])
    if resolved["student"].spec.pipeline.corpus is None:
        for role in ROLES:
            resolved[role].spec.pipeline = replace(resolved[role].spec.pipeline, corpus="demo")
    try:
        check_answer_length(resolved["student"].spec.sampling, cfg.limits)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return resolved


def system_info(cfg: ServeConfig, resolved: dict[str, Resolved]) -> dict[str, Any]:
    """What /health shows: each role's system hash, where it came from, and any accepted differences."""
    return {"override": cfg.system_override, **{role: resolved[role].info() for role in ROLES}}
