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
    "index": "index.config:IndexConfig",
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


def _strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def _machine_paths(values) -> list[str]:
    """Absolute paths (/work/..., /root/..., /data/...): they exist on one machine only. Relative paths,
    ``$RAGROUTE_HOME/...`` and URLs are fine."""
    return [v for v in values if v.startswith("/")]


@pytest.mark.parametrize("path", ALL_YAMLS, ids=lambda p: str(p.relative_to(CONFIG_ROOT)))
def test_no_config_names_a_path_of_one_machine(path: Path):
    import yaml

    assert _machine_paths(_strings(yaml.safe_load(path.read_text()))) == []


@pytest.mark.parametrize("schema", sorted(set(SCHEMAS.values()) | {"evaluation.demo:DemoConfig", "ragroute.generate:GenerateConfig"}))
def test_no_default_names_a_path_of_one_machine(schema: str):
    import dataclasses

    from ragroute.config import _leaf_fields

    module_name, class_name = schema.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    defaults = [f.default for _, f in _leaf_fields(cls) if isinstance(f.default, str)]
    defaults += [v for _, f in _leaf_fields(cls) if f.default_factory is not dataclasses.MISSING
                 for v in _strings(f.default_factory())]
    assert defaults, f"{schema} has no string defaults to check"
    assert _machine_paths(defaults) == []


REPO_ROOT = Path(__file__).resolve().parents[2]
USER_DOCS = sorted([REPO_ROOT / "README.md", *(REPO_ROOT / "docs").rglob("*.md")])
# A config path as the docs write it: configs/<dir>/<name>.yaml, possibly a glob (`qwen2.5-*_v3.1.yaml`);
# placeholders such as configs/<stage>/<run>.yaml are not names and are skipped.
DOC_CONFIG_PATH = r"configs/[\w.\-/]*(?:\*[\w.\-/]*)*\.yaml"


def _named_configs(doc: Path) -> list[str]:
    import re

    return sorted(set(re.findall(DOC_CONFIG_PATH, doc.read_text())))


def test_the_docs_name_config_paths():
    named = [p for doc in USER_DOCS for p in _named_configs(doc)]
    assert "configs/serve/smollm2-135m_routed.yaml" in named  # the pattern finds what the README names


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_config_the_docs_name_exists(doc: Path):
    missing = [p for p in _named_configs(doc) if not list(CONFIG_ROOT.parent.glob(p))]
    assert missing == [], f"{doc.name} names configs that do not exist: {missing}"
