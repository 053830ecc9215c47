"""YAML → typed dataclass configs, with command-line overrides and clear errors.

Every stage declares its configuration as dataclasses whose fields carry a help text in
``field(metadata={"help": ...})`` (the TRL convention). OmegaConf does the merging and type checking:
the dataclass is the schema, the YAML file and the overrides are merged onto it, and an unknown key or a
value of the wrong type is rejected. This module turns OmegaConf's exceptions into :class:`ConfigError`
messages that name the file and the key, and builds an ``argparse`` parser with one ``--flag`` per field
so ``--help`` documents the config.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ragroute.errors import ConfigError

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]


def config_root() -> Path:
    """The directory of the shipped configs (``configs/<stage>/<run>.yaml``).

    A wheel carries them as package data (``ragroute/configs``, mapped from the repository's top-level
    ``configs/`` by ``setup.py``) and :mod:`importlib.resources` finds them there; a source checkout (also an
    editable install) reads the repository's ``configs/`` directly.
    """
    from importlib.resources import files

    packaged = Path(str(files("ragroute") / "configs"))
    return packaged if packaged.is_dir() else REPO_ROOT / "configs"


CONFIG_ROOT = config_root()


def shared_pubmedqa_dev() -> Path:
    """The PubMedQA dev set that tests and benchmarks read: ``$RAGROUTE_PQAL_DEV`` if set, else the copy shipped
    in the package (``ragroute/data/pubmedqa/pqal_dev.json``, MIT, provenance in its README.md)."""
    from importlib.resources import files

    override = os.environ.get("RAGROUTE_PQAL_DEV")
    return Path(override) if override else Path(str(files("ragroute") / "data" / "pubmedqa" / "pqal_dev.json"))


def resolve_path(path: str | os.PathLike[str], what: str = "config file") -> Path:
    """Find a file as given (relative to the working directory), else among the shipped configs
    (``configs/eval/x.yaml`` or ``eval/x.yaml``), else relative to the source checkout. So the CLI's
    ``configs/...`` defaults work from any directory, with a wheel install as with a clone."""
    candidate = Path(path).expanduser()
    if candidate.exists():
        return candidate
    if not candidate.is_absolute():
        parts = candidate.parts[1:] if candidate.parts[:1] == ("configs",) else candidate.parts
        for base in (CONFIG_ROOT.joinpath(*parts), REPO_ROOT / candidate):
            if base.exists():
                return base
    raise ConfigError(f"{what} not found: {path}")


def _omegaconf_error(exc: Exception, source: str) -> ConfigError:
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, ValidationError

    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, ConfigKeyError):
        return ConfigError(f"{source}: unknown key '{key}' ({first_line})")
    if isinstance(exc, MissingMandatoryValue):
        return ConfigError(f"{source}: missing required value '{key}'")
    if isinstance(exc, ValidationError):
        return ConfigError(f"{source}: invalid value for '{key}': {first_line}")
    return ConfigError(f"{source}: {first_line}")


def load_config(cls: type[T], path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()) -> T:
    """Build ``cls`` from its defaults, then the YAML file at ``path``, then ``key=value`` overrides.

    Raises :class:`ConfigError` naming the file and key for a missing file, malformed YAML, an unknown key,
    a value of the wrong type or a value rejected by the dataclass's own ``__post_init__`` checks.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    merged = OmegaConf.structured(cls)
    source = "defaults"
    try:
        if path is not None:
            source = str(path)
            file_path = resolve_path(path)
            try:
                loaded = OmegaConf.load(file_path)
            except YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from None
            if loaded is None or not OmegaConf.is_dict(loaded):
                if loaded is not None and len(loaded) > 0:
                    raise ConfigError(f"{path}: the top level must be a mapping of config keys")
            else:
                merged = OmegaConf.merge(merged, loaded)
        if overrides:
            source = "command-line override"
            for item in overrides:
                if "=" not in item:
                    raise ConfigError(f"override '{item}' must look like key=value")
            # Python users write None where YAML says null.
            dotlist = [f"{item[:-5]}=null" if item.endswith("=None") else item for item in overrides]
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(dotlist))
        source = str(path) if path is not None else "config"
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise _omegaconf_error(exc, source) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON-serialisable dict of a config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def config_hash(cfg: Any) -> str:
    """A short stable hash of a config's content, stored in every record it produces."""
    payload = json.dumps(config_to_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:12]


def _leaf_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field[Any]]]:
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name, f.type)
        if dataclasses.is_dataclass(hint):
            yield from _leaf_fields(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


def field_default(f: dataclasses.Field[Any]) -> str:
    """A field's default as a YAML value (``null`` for None, flow style for lists and dicts)."""
    import yaml

    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if isinstance(value, str):
        return repr(value) if value == "" or value != value.strip() or "\n" in value else value
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip().removesuffix("...").strip()


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--config`` plus one ``--dotted.field-name VALUE`` override per field, each showing the field's
    help text (its ``metadata["help"]``) and its default."""
    parser.add_argument("--config", help="YAML file of this stage's settings (unknown keys are an error)")
    group = parser.add_argument_group("settings (override the YAML; values are parsed as YAML scalars)")
    for dotted, f in _leaf_fields(cls):
        help_text = f.metadata.get("help", "")
        if "(default" not in help_text:  # some helps already explain their default in words
            help_text = f"{help_text} (default: {field_default(f)})".strip()
        # A bare boolean flag (``--fresh``) means true; ``--fresh false`` still works.
        flag = {"nargs": "?", "const": "true"} if f.type in (bool, "bool") else {}
        group.add_argument(
            "--" + dotted.replace("_", "-"),
            dest=f"cfg:{dotted}",
            metavar="V",
            default=None,
            help=help_text.replace("%", "%%"),  # argparse %-formats help strings
            **flag,
        )


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Load the config named by ``--config`` and apply every ``--field`` given on the command line."""
    overrides = [
        f"{dest[4:]}={value}" for dest, value in vars(args).items() if dest.startswith("cfg:") and value is not None
    ]
    return load_config(cls, args.config, overrides)
