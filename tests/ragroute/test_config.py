import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ragroute.artifacts import content_hash
from ragroute.config import config_to_dict, load_config
from ragroute.engines.base import EngineConfig, SamplingConfig
from ragroute.errors import ConfigError


@dataclass
class Inner:
    size: int = field(default=3, metadata={"help": "a size"})


@dataclass
class Outer:
    name: str = field(default="x", metadata={"help": "a name"})
    ratio: float = field(default=0.5, metadata={"help": "a ratio"})
    inner: Inner = field(default_factory=Inner)
    engine: EngineConfig = field(default_factory=EngineConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_merge_onto_defaults(tmp_path):
    path = write(tmp_path, "name: y\ninner:\n  size: 7\n")
    cfg = load_config(Outer, path, ["ratio=0.25", "sampling.max_tokens=9"])
    assert (cfg.name, cfg.ratio, cfg.inner.size, cfg.sampling.max_tokens) == ("y", 0.25, 7, 9)
    assert isinstance(cfg.inner, Inner)


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("nmae: y\n", [], "unknown key 'nmae'"),
        ("inner:\n  sise: 1\n", [], "unknown key 'inner.sise'"),
        ("ratio: lots\n", [], "invalid value for 'ratio'"),
        ("", ["inner.size=big"], "invalid value for 'inner.size'"),
        ("", ["nosuch=1"], "unknown key 'nosuch'"),
        ("", ["sampling.max_tokens=0"], "max_tokens must be >= 1"),
        ("", ["engine.name=nosuch"], "unknown engine 'nosuch'"),
        ("name: [unclosed\n", [], "not valid YAML"),
        ("- a\n- b\n", [], "top level must be a mapping"),
        ("", ["justakey"], "must look like key=value"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(Outer, write(tmp_path, text), overrides)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_content_hash_follows_config_content():
    a, b = Outer(), Outer()
    assert content_hash(config_to_dict(a)) == content_hash(config_to_dict(b))
    b.inner.size = 4
    assert content_hash(config_to_dict(a)) != content_hash(config_to_dict(b))


STAGE_CONFIGS = ["evaluation.config:EvalConfig", "evaluation.demo:DemoConfig", "ragroute.generate:GenerateConfig",
                 "serve.config:ServeConfig", "router.config:RouterConfig", "train.config:TrainConfig",
                 "data_gen.config:DataGenConfig"]


@pytest.mark.parametrize("schema", STAGE_CONFIGS)
def test_every_flag_shows_its_fields_help_and_default(schema):
    import argparse
    import importlib

    from ragroute.config import _leaf_fields, add_config_arguments

    module_name, class_name = schema.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    helps = {a.dest[4:]: a.help for a in parser._actions
             if a.dest.startswith("cfg:") and a.help != argparse.SUPPRESS}  # hidden: renamed keys' old flags
    fields = dict(_leaf_fields(cls))
    assert set(helps) == set(fields)
    for dotted, f in fields.items():
        assert f.metadata.get("help"), f"{schema}: field {dotted} has no help metadata"
        assert helps[dotted].startswith(f.metadata["help"].replace("%", "%%")), dotted
        assert "(default" in helps[dotted], dotted


def test_a_bare_boolean_flag_means_true():
    import argparse

    from evaluation.demo import DemoConfig
    from ragroute.config import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, DemoConfig)
    assert config_from_args(DemoConfig, parser.parse_args(["--fresh", "--limit", "3"])).fresh is True
    assert config_from_args(DemoConfig, parser.parse_args(["--fresh", "false"])).fresh is False
    assert config_from_args(DemoConfig, parser.parse_args([])).fresh is False


def test_defaults_read_as_yaml():
    from ragroute.config import _leaf_fields, field_default

    fields = dict(_leaf_fields(Outer))
    fields.update({f"engine.{k}": v for k, v in _leaf_fields(EngineConfig)})
    fields.update({f"sampling.{k}": v for k, v in _leaf_fields(SamplingConfig)})
    assert field_default(fields["inner.size"]) == "3"
    assert field_default(fields["name"]) == "x"
    assert field_default(fields["engine.vllm.quantization"]) == "null"
    assert field_default(fields["engine.vllm.enable_prefix_caching"]) == "true"
    assert field_default(fields["sampling.stop"]) == "[]"


def test_resolve_path_finds_shipped_configs_from_any_directory(tmp_path, monkeypatch):
    from ragroute.config import CONFIG_ROOT, resolve_path

    monkeypatch.chdir(tmp_path)
    shipped = CONFIG_ROOT / "eval" / "smollm2-135m_demo.yaml"
    assert resolve_path("configs/eval/smollm2-135m_demo.yaml") == shipped
    assert resolve_path("eval/smollm2-135m_demo.yaml") == shipped
    local = tmp_path / "configs" / "eval" / "smollm2-135m_demo.yaml"
    local.parent.mkdir(parents=True)
    local.write_text("teacher: mine\n")
    assert resolve_path("configs/eval/smollm2-135m_demo.yaml") == Path("configs/eval/smollm2-135m_demo.yaml")
    with pytest.raises(ConfigError, match="config file not found: configs/eval/nosuch.yaml"):
        resolve_path("configs/eval/nosuch.yaml")


def test_pubmedqa_dev_set_ships_in_the_package_with_its_licence(monkeypatch):
    import ragroute
    from ragroute.config import shared_pubmedqa_dev

    monkeypatch.delenv("RAGROUTE_PQAL_DEV", raising=False)
    path = shared_pubmedqa_dev()
    assert path.parent == Path(ragroute.__file__).parent / "data" / "pubmedqa"
    assert len(json.loads(path.read_text())) == 500
    assert "MIT License" in (path.parent / "LICENSE").read_text()
    assert "Jin" in (path.parent / "README.md").read_text()
    monkeypatch.setenv("RAGROUTE_PQAL_DEV", "/elsewhere/pqal.json")
    assert shared_pubmedqa_dev() == Path("/elsewhere/pqal.json")
