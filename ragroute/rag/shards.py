"""Document embeddings on disk, in fixed-size shards: what ``ragroute index build`` computes (resumably), what the
FAISS index is filled from, and what the bi-encoder reranker and the exact refine read by position.

Format of ``INDEX_DIR/embeddings/`` (simple on purpose: a benchmark may pre-fill shards with its own vectors):

- ``info.json``: ``{"model": str, "dim": int, "rows_per_shard": int, "dtype": "float16"}``; written by the build
  when missing, and a build with another model or shard size is refused while it exists.
- ``shard_000123.npy``: a plain ``np.save`` array, dtype float16, shape (n, dim), L2-normalised rows; shard ``k``
  holds the documents at store positions ``k * rows_per_shard`` .. ``k * rows_per_shard + n - 1`` in order
  (``n == rows_per_shard`` except in the last shard).
- ``shard_000123.done``: the done marker, JSON ``{"rows": n}``, written after the ``.npy`` is complete (both go
  through a temporary file and a rename). A shard without its marker is recomputed; a shard with one is never
  recomputed. When an update appends rows that fall in a done shard that is not full, only those rows are
  embedded and the shard is rewritten with the old rows unchanged followed by the new ones.

Reading memory-maps every shard (``np.load(mmap_mode="r")``), so a 24M x 384 fp16 matrix (18 GB) costs page
cache, not process memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.errors import UserError

EMBEDDINGS_DIR = "embeddings"
INFO_FILE = "info.json"
DEFAULT_ROWS_PER_SHARD = 100_000


def shard_path(directory: Path, k: int) -> Path:
    return directory / f"shard_{k:06d}.npy"


def marker_path(directory: Path, k: int) -> Path:
    return directory / f"shard_{k:06d}.done"


def done_rows(directory: Path, k: int) -> int:
    """Rows of shard ``k`` that are complete (0 when it has no done marker)."""
    marker = marker_path(directory, k)
    if not marker.is_file():
        return 0
    return int(json.loads(marker.read_text())["rows"])


def write_shard(directory: Path, k: int, vectors: np.ndarray) -> None:
    """Write shard ``k`` and then its done marker, each atomically (temporary file + rename)."""
    tmp = directory / f".shard_{k:06d}.{os.getpid()}.npy"
    np.save(tmp, np.ascontiguousarray(vectors, dtype=np.float16))
    os.replace(tmp, shard_path(directory, k))
    tmp_marker = directory / f".shard_{k:06d}.{os.getpid()}.done"
    tmp_marker.write_text(json.dumps({"rows": int(len(vectors))}))
    os.replace(tmp_marker, marker_path(directory, k))


def read_info(directory: Path) -> dict[str, Any] | None:
    path = directory / INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def ensure_info(directory: Path, model: str, dim: int, rows_per_shard: int) -> None:
    """Record what the shards are; refuse shards made by another model or with another shard size."""
    directory.mkdir(parents=True, exist_ok=True)
    info = read_info(directory)
    wanted = {"model": model, "dim": dim, "rows_per_shard": rows_per_shard, "dtype": "float16"}
    if info is None:
        (directory / INFO_FILE).write_text(json.dumps(wanted, indent=2))
        return
    for key in ("model", "dim", "rows_per_shard"):
        if info.get(key) != wanted[key]:
            raise UserError(
                f"the embedding shards in {directory} were made with {key}={info.get(key)!r}, this build uses "
                f"{key}={wanted[key]!r}; build into another index directory or delete {directory}"
            )


class EmbeddingShards:
    """Read side: vectors by store position, from memory-mapped shards (opened on first use)."""

    def __init__(self, directory: str | Path, rows: int) -> None:
        self.directory = Path(directory)
        info = read_info(self.directory)
        if info is None:
            raise UserError(f"no embeddings in {self.directory} (missing {INFO_FILE}; run `ragroute index build`)")
        self.rows_per_shard = int(info["rows_per_shard"])
        self.dim = int(info["dim"])
        self.model = str(info["model"])
        self.rows = rows
        self._open: dict[int, np.ndarray] = {}

    @property
    def n_shards(self) -> int:
        return -(-self.rows // self.rows_per_shard)

    def shard(self, k: int) -> np.ndarray:
        array = self._open.get(k)
        if array is None:
            array = self._open[k] = np.load(shard_path(self.directory, k), mmap_mode="r")
        return array

    def vectors(self, positions: np.ndarray | list[int]) -> np.ndarray:
        """(len(positions), dim) float32 rows, in the order asked."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.dim), dtype=np.float32)
        shard_of = positions // self.rows_per_shard
        for k in np.unique(shard_of):
            where = np.flatnonzero(shard_of == k)
            out[where] = self.shard(int(k))[positions[where] - k * self.rows_per_shard]
        return out
