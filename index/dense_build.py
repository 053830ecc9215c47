"""Write side of the dense index: embedding shards (resumable), then a FAISS index trained on a sample and filled
shard by shard.

Shards are the format of :mod:`ragroute.rag.shards` (``INDEX_DIR/embeddings/shard_NNNNNN.npy`` fp16 + a
``.done`` marker, fixed rows per shard). A done shard is never recomputed, so a killed build continues where it
stopped, a benchmark may pre-fill shards with its own vectors, and an update embeds only its new rows. Each
shard is embedded from the same rows in the same batches whether or not the build was interrupted, so a resumed
build ends with the same vectors, and then (fixed training sample and seed) the same FAISS index.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.rag.ann import DENSE_FILE
from ragroute.rag.shards import EmbeddingShards, done_rows, shard_path, write_shard

log = logging.getLogger("ragroute.index")



def shards_todo(directory: Path, rows: int, rows_per_shard: int) -> list[tuple[int, int, int]]:
    """(shard, first row to embed, stop row) for every shard that lacks rows, in order."""
    todo = []
    for k in range(-(-rows // rows_per_shard)):
        lo, hi = k * rows_per_shard, min((k + 1) * rows_per_shard, rows)
        have = done_rows(directory, k)
        if lo + have < hi:
            todo.append((k, lo + have, hi))
    return todo


class Progress:
    """docs/s and ETA over the rows still to embed (tqdm bar on a terminal, a log line every ``every_s``)."""

    def __init__(self, total: int, every_s: float = 30.0, what: str = "embedded") -> None:
        from tqdm import tqdm

        self.what = what
        self.total = total
        self.done = 0
        self.started = self.last = time.monotonic()
        self.every_s = every_s
        self.bar = tqdm(total=total, unit="doc", desc=what, disable=None, smoothing=0.05)

    def __call__(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            eta = (self.total - self.done) / rate if rate else float("inf")
            log.info("%s %d/%d documents, %.0f docs/s, ETA %.0f s", self.what, self.done, self.total, rate, eta)

    def close(self) -> None:
        self.bar.close()


def embed_shards(store: Any, directory: Path, todo: list[tuple[int, int, int]], rows_per_shard: int, embedder: Any,
                 on_docs: Callable[[int], None]) -> None:
    """Embed the rows [lo, hi) of every shard ``k`` in ``todo`` (appended to the shard's done rows, if any), in
    chunks of ``embedder.texts_per_call`` rows from ``lo`` (a fixed chunking: a resumed shard is the same), and
    write each shard as soon as its last chunk is embedded."""
    size = embedder.texts_per_call
    chunks = [(a, min(a + size, hi)) for _, lo, hi in todo for a in range(lo, hi, size)]
    last_chunk_of = {hi: (k, lo) for k, lo, hi in todo}
    parts: list[np.ndarray] = []
    for a, b, vectors in embedder.rows(store, chunks):
        parts.append(np.asarray(vectors, dtype=np.float16))
        on_docs(b - a)
        if b in last_chunk_of:
            k, lo = last_chunk_of[b]
            first = k * rows_per_shard
            kept = [np.load(shard_path(directory, k))[: lo - first]] if lo > first else []
            write_shard(directory, k, np.concatenate(kept + parts))
            parts = []


def embed_all(store: Any, directory: Path, rows: int, rows_per_shard: int, embedder: Any) -> int:
    """Compute every missing shard row locally; returns the number of documents embedded."""
    todo = shards_todo(directory, rows, rows_per_shard)
    total = sum(hi - lo for _, lo, hi in todo)
    if not total:
        return 0
    log.info("embedding %d documents in %d shards into %s", total, len(todo), directory)
    progress = Progress(total)
    try:
        embed_shards(store, directory, todo, rows_per_shard, embedder, progress)
    finally:
        progress.close()
    return total


# ------------------------------------------------------------------------------------------------- FAISS


def training_sample(shards: EmbeddingShards, size: int, seed: int = 0) -> np.ndarray:
    """``size`` vectors at evenly random positions (sorted, so the shards are read in order)."""
    rows = shards.rows
    if size >= rows:
        positions = np.arange(rows)
    else:
        positions = np.sort(np.random.default_rng(seed).choice(rows, size=size, replace=False))
    return shards.vectors(positions)


def iter_shard_vectors(shards: EmbeddingShards, start: int) -> Iterator[np.ndarray]:
    """float32 vectors of rows [start, rows) in shard-sized pieces (each a copy: no shard stays mapped)."""
    pos = start
    while pos < shards.rows:
        k = pos // shards.rows_per_shard
        hi = min((k + 1) * shards.rows_per_shard, shards.rows)
        yield np.asarray(shards.shard(k)[pos - k * shards.rows_per_shard : hi - k * shards.rows_per_shard],
                         dtype=np.float32)
        pos = hi


def write_index_atomic(index: Any, path: Path) -> None:
    import faiss

    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)


def build_faiss(out: Path, shards: EmbeddingShards, factory: str, train_size: int, seed: int = 0) -> Any:
    """Train the index named by ``factory`` on a sample of the shards, add every vector in position order, and
    write ``out/dense.faiss``."""
    import faiss

    index = faiss.index_factory(shards.dim, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        sample = training_sample(shards, train_size, seed)
        log.info("training %s on %d vectors", factory, len(sample))
        started = time.perf_counter()
        _seed_clustering(index, seed)
        index.train(sample)
        del sample
        log.info("trained in %.0f s", time.perf_counter() - started)
    add_vectors(index, shards, 0)
    write_index_atomic(index, out / DENSE_FILE)
    return index


def _seed_clustering(index: Any, seed: int) -> None:
    """Fix the k-means seed of IVF coarse quantizers (the same training sample then gives the same index)."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.cp.seed = seed


def add_vectors(index: Any, shards: EmbeddingShards, start: int) -> None:
    """Add rows [start, rows) in shard-sized batches (FAISS ids = positions: ``index.ntotal`` must be start)."""
    if index.ntotal != start:
        raise ValueError(f"index holds {index.ntotal} vectors, cannot add from position {start}")
    started, n = time.perf_counter(), shards.rows - start
    for vectors in iter_shard_vectors(shards, start):
        index.add(vectors)
        log.info("added %d/%d vectors to the dense index (%.0f/s)", index.ntotal - start, n,
                 (index.ntotal - start) / max(time.perf_counter() - started, 1e-9))
