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
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ragroute.errors import ConfigError

log = logging.getLogger("ragroute.config")

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


def _renamed_moved(cls: type, loaded: Any, source: str) -> Any:
    """``loaded`` (a YAML mapping or the overrides) with every key that ``cls`` or a nested config renamed moved to
    its new name, with a warning naming the new key (a config lists them as ``RENAMED_KEYS = {old: new}``, dotted
    and relative to itself). Both names given different values is an error."""
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(loaded, resolve=False)
    _move_renamed(cls, tree, source, "")
    return OmegaConf.create(tree)


def _move_renamed(cls: type, tree: dict[str, Any], source: str, prefix: str) -> None:
    import typing

    for old, new in getattr(cls, "RENAMED_KEYS", {}).items():
        *old_parents, old_leaf = old.split(".")
        holder = _subtree(tree, old_parents, create=False)
        if holder is None or old_leaf not in holder:
            continue
        value = holder.pop(old_leaf)
        *new_parents, new_leaf = new.split(".")
        target = _subtree(tree, new_parents, create=True)
        if value is None:  # a whole config of an earlier release lists the old key unset: nothing to move
            continue
        if target.get(new_leaf) is not None and target[new_leaf] != value:
            raise ConfigError(f"{source}: '{prefix}{old}' is the old name of '{prefix}{new}'; give only '{prefix}{new}'")
        target[new_leaf] = value
        log.warning("%s: '%s%s' is now '%s%s'; the old name still works for now", source, prefix, old, prefix, new)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name, f.type)
        if dataclasses.is_dataclass(hint) and isinstance(tree.get(f.name), dict):
            _move_renamed(hint, tree[f.name], source, f"{prefix}{f.name}.")


def _subtree(tree: dict[str, Any], keys: list[str], create: bool) -> dict[str, Any] | None:
    for key in keys:
        if not isinstance(tree.get(key), dict):
            if not create:
                return None
            tree[key] = {}
        tree = tree[key]
    return tree


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
                merged = OmegaConf.merge(merged, _renamed_moved(cls, loaded, str(path)))
        if overrides:
            source = "command-line override"
            for item in overrides:
                if "=" not in item:
                    raise ConfigError(f"override '{item}' must look like key=value")
            # Python users write None where YAML says null.
            dotlist = [f"{item[:-5]}=null" if item.endswith("=None") else item for item in overrides]
            merged = OmegaConf.merge(merged, _renamed_moved(cls, OmegaConf.from_dotlist(dotlist), source))
        source = str(path) if path is not None else "config"
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise _omegaconf_error(exc, source) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON-serialisable dict of a config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


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
    for old in _renamed_keys(cls):  # old flags keep working (moved, with a warning, by load_config)
        group.add_argument("--" + old.replace("_", "-"), dest=f"cfg:{old}", default=None, help=argparse.SUPPRESS)


def _renamed_keys(cls: type, prefix: str = "") -> Iterator[str]:
    """Every dotted key that ``cls`` or a nested config lists in ``RENAMED_KEYS``."""
    import typing

    yield from (f"{prefix}{old}" for old in getattr(cls, "RENAMED_KEYS", {}))
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name, f.type)
        if dataclasses.is_dataclass(hint):
            yield from _renamed_keys(hint, f"{prefix}{f.name}.")


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Load the config named by ``--config`` and apply every ``--field`` given on the command line."""
    overrides = [
        f"{dest[4:]}={value}" for dest, value in vars(args).items() if dest.startswith("cfg:") and value is not None
    ]
    return load_config(cls, args.config, overrides)
