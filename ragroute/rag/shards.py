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

Whole shards (the FAISS fill, benchmarks) are memory-mapped (``np.load(mmap_mode="r")``) one at a time and
never kept. Rows by position (the
exact refine and the bi-encoder rerank: ~1,000 scattered rows a question) are read with ``pread``: each row
touches its own page, so a mapping would make every page a serving process ever read part of its RSS (gigabytes
at 10M documents); read this way they stay in the kernel's page cache (shared, evictable) and the process holds
only the rows it asked for.
"""

from __future__ import annotations

import json
import os
import threading
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


def temp_shard_path(directory: Path, k: int, pid: int) -> Path:
    """Where process ``pid`` writes shard ``k`` before renaming it into place."""
    return directory / f".shard_{k:06d}.{pid}.npy"


def done_rows(directory: Path, k: int) -> int:
    """Rows of shard ``k`` that are complete (0 when it has no done marker)."""
    marker = marker_path(directory, k)
    if not marker.is_file():
        return 0
    return int(json.loads(marker.read_text())["rows"])


def write_shard(directory: Path, k: int, vectors: np.ndarray) -> None:
    """Write shard ``k`` and then its done marker, each atomically (temporary file + rename)."""
    tmp = temp_shard_path(directory, k, os.getpid())
    np.save(tmp, np.ascontiguousarray(vectors, dtype=np.float16))
    os.replace(tmp, shard_path(directory, k))
    tmp_marker = tmp.with_suffix(".done")
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
        self._files: dict[int, tuple[int, int]] = {}  # shard -> (file descriptor, byte offset of row 0)
        self._opening = threading.Lock()  # serving threads read rows at the same time: open each shard once
        self.row_bytes = self.dim * 2  # float16

    @property
    def n_shards(self) -> int:
        return -(-self.rows // self.rows_per_shard)

    def shard(self, k: int) -> np.ndarray:
        """Shard ``k`` memory-mapped; unmapped once the caller drops it (a kept mapping would hold every page
        read in the process's RSS: 4.45 GB after a FAISS fill of 5M rows)."""
        return np.load(shard_path(self.directory, k), mmap_mode="r")

    def _file(self, k: int) -> tuple[int, int]:
        opened = self._files.get(k)
        if opened is not None:
            return opened
        with self._opening:
            return self._files.get(k) or self._open_file(k)

    def _open_file(self, k: int) -> tuple[int, int]:
        path = shard_path(self.directory, k)
        with open(path, "rb") as fh:
            fmt = np.lib.format
            version = fmt.read_magic(fh)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(fh)
            offset = fh.tell()
        if fortran or dtype != np.float16 or shape[1:] != (self.dim,):
            raise UserError(f"{path} is not a C-ordered float16 (n, {self.dim}) array; rebuild the index")
        fd = os.open(path, os.O_RDONLY)
        if hasattr(os, "posix_fadvise"):  # scattered rows: read-ahead would only fill the cache with neighbours
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        self._files[k] = (fd, offset)
        return fd, offset

    def vectors(self, positions: np.ndarray | list[int]) -> np.ndarray:
        """(len(positions), dim) float32 rows, in the order asked (read with ``pread``, see the module doc)."""
        positions = np.asarray(positions, dtype=np.int64)
        size = self.row_bytes
        buffer = bytearray(len(positions) * size)
        view = memoryview(buffer)
        for i, position in enumerate(positions.tolist()):
            k, row = divmod(position, self.rows_per_shard)
            fd, offset = self._file(k)
            chunk = os.pread(fd, size, offset + row * size)
            if len(chunk) != size:
                raise UserError(f"{shard_path(self.directory, k)} ends before row {row}; rebuild the index")
            view[i * size : (i + 1) * size] = chunk
        return np.frombuffer(buffer, dtype=np.float16).reshape(len(positions), self.dim).astype(np.float32)

    def close(self) -> None:
        files = getattr(self, "_files", {})  # absent when __init__ refused the directory
        for fd, _ in files.values():
            os.close(fd)
        files.clear()

    def __del__(self) -> None:
        self.close()
