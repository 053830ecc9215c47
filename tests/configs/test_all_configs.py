"""Every YAML shipped under configs/ loads into its stage's config dataclass (unknown keys are errors)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from ragroute.config import CONFIG_ROOT, load_config

# configs/<dir> -> "module:ConfigClass"
SCHEMAS = {
    "models": "ragroute.models:ModelSpec",
    "pipeline": "ragroute.rag.pipeline:PipelineConfig",
    "data_gen": "data_gen.config:DataGenConfig",
    "train": "train.config:TrainConfig",
    "router": "router.config:RouterConfig",
    "serve": "serve.config:ServeConfig",
    "eval": "evaluation.config:EvalConfig",
    "loop": "evaluation.loop:LoopConfig",
}

ALL_YAMLS = sorted(p for p in CONFIG_ROOT.rglob("*.yaml"))


def schema_for(path: Path):
    stage = path.relative_to(CONFIG_ROOT).parts[0]
    module_name, class_name = SCHEMAS[stage].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def test_every_config_directory_has_a_schema():
    stages = {p.relative_to(CONFIG_ROOT).parts[0] for p in ALL_YAMLS}
    assert stages - set(SCHEMAS) - {"accelerate"} == set()
    assert ALL_YAMLS, "no configs shipped"


@pytest.mark.parametrize("path", [p for p in ALL_YAMLS if p.parts[-2] != "accelerate"], ids=lambda p: str(p.relative_to(CONFIG_ROOT)))
def test_config_loads(path: Path):
    cfg = load_config(schema_for(path), path)
    assert cfg is not None


@pytest.mark.parametrize("path", sorted((CONFIG_ROOT / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_config_loads(path: Path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    assert cfg.compute_environment.value == "LOCAL_MACHINE"


def test_model_configs_name_their_file():
    from ragroute.models import ModelSpec

    for path in (CONFIG_ROOT / "models").glob("*.yaml"):
        assert load_config(ModelSpec, path).name in (path.stem, path.stem.replace("-instruct", ""))
