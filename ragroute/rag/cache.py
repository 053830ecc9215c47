"""On-disk index cache: content fingerprints and atomic directory writes.

An index is stored under ``INDEX_DIR/<kind>-<fingerprint>`` where the fingerprint hashes the corpus content and
every setting that changes the index, so a changed corpus or setting builds a new index instead of silently
reusing a stale one. Indexes are written to a temporary directory and renamed into place, so a run killed
mid-build never leaves a half-written index that a later run would load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


def default_index_dir() -> Path:
    from ragroute.models import ragroute_home

    return ragroute_home() / "indexes"


def corpus_fingerprint(docs: Iterable[Any]) -> str:
    """A hash of every document's id, title and text, in order (the index stores documents by position)."""
    digest = hashlib.sha256()
    for doc in docs:
        for part in (doc.id, doc.title, doc.text):
            digest.update(part.encode("utf-8", "surrogatepass"))
            digest.update(b"\x00")
        digest.update(b"\x01")
    return digest.hexdigest()


def index_key(kind: str, corpus_hash: str, settings: dict[str, Any]) -> str:
    payload = json.dumps({"corpus": corpus_hash, **settings}, sort_keys=True).encode()
    return f"{kind}-{hashlib.sha256(payload).hexdigest()[:16]}"


def load_or_build(
    target: Path,
    build: Callable[[Path], None],
    load: Callable[[Path], T],
) -> T:
    """Load the index at ``target``; build it first if it is missing, and rebuild it if it cannot be loaded
    (a truncated or corrupted file): a broken cache costs a rebuild, never a crash."""
    if target.exists():
        try:
            return load(target)
        except (OSError, ValueError, KeyError, EOFError) as exc:
            logger.warning("index %s is unreadable (%s: %s); rebuilding it", target, type(exc).__name__, exc)
            shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.exists():  # a concurrent builder won the race when target exists: use theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load(target)
