from dataclasses import dataclass, field

import pytest

from ragroute.config import config_hash, load_config
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


def test_config_hash_follows_content():
    a, b = Outer(), Outer()
    assert config_hash(a) == config_hash(b)
    b.inner.size = 4
    assert config_hash(a) != config_hash(b)
