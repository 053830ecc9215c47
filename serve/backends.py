"""serve's models: thin adapters over the streaming face of the one engine layer (:mod:`ragroute.engines`).

A role's :class:`~serve.config.BackendConfig` names a model and an :class:`~ragroute.engines.base.EngineConfig`;
the engine (in-process vLLM ``AsyncLLM``, in-process transformers, or an upstream OpenAI-compatible server) is
the same code data_gen and eval run through its batch face. Timeouts and fallback live in :mod:`serve.service`,
so every engine gets the same behaviour.
"""

from __future__ import annotations

from pathlib import Path

from ragroute.engines.base import StreamingEngine, create_streaming_engine
from ragroute.models import ModelSpec
from serve.config import BackendConfig


def model_spec_for(cfg: BackendConfig, model: ModelSpec | None = None) -> ModelSpec:
    """The model a role serves: ``model`` (from the artifacts), else ``cfg.model`` as a model config name, YAML or
    checkpoint directory, else as a plain model path (ragroute:NAME, hub id); an upstream may name none."""
    from ragroute.config import CONFIG_ROOT
    from ragroute.models import load_model_spec

    ref = cfg.model
    if model is not None:
        spec = ModelSpec(**vars(model))
    elif ref.endswith((".yaml", ".yml")) or (CONFIG_ROOT / "models" / f"{ref}.yaml").exists() \
            or (Path(ref) / "config.json").is_file():
        spec = load_model_spec(ref)
    else:
        default_name = ref.split(":", 1)[1] if ref.startswith("ragroute:") else Path(ref.rstrip("/")).name
        spec = ModelSpec(name=default_name or cfg.engine.openai.served_model_name or str(cfg.engine.openai.base_url), path=ref)
    if cfg.name:
        spec.name = cfg.name
    if cfg.dtype:
        spec.dtype = cfg.dtype
    return spec


def create_backend(cfg: BackendConfig, model: ModelSpec | None = None) -> StreamingEngine:
    """The streaming engine for one role; ``await start()`` loads it."""
    return create_streaming_engine(model_spec_for(cfg, model), cfg.engine)
