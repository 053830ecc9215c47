"""The FAISS side of the index build (index.dense_build): its training sample and the shard-by-shard fill read
the embedding shards without keeping them mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psutil

from index.dense_build import iter_shard_vectors, training_sample
from ragroute.rag.shards import EmbeddingShards, ensure_info, shard_path, write_shard

DIM, PER_SHARD, ROWS = 8, 10, 27


def shards_on_disk(directory: Path) -> tuple[EmbeddingShards, np.ndarray]:
    ensure_info(directory, "model-x", DIM, PER_SHARD)
    full = np.random.default_rng(1).standard_normal((ROWS, DIM)).astype(np.float16)
    for k in range(3):
        write_shard(directory, k, full[k * PER_SHARD : (k + 1) * PER_SHARD])
    return EmbeddingShards(directory, ROWS), full


def mapped_shards(directory: Path) -> set[Path]:
    mapped = {Path(m.path) for m in psutil.Process().memory_maps(grouped=True)}
    return mapped & {shard_path(directory, k) for k in range(3)}


def test_the_fill_reads_every_row_from_start_shard_by_shard_and_keeps_none_mapped(tmp_path: Path) -> None:
    shards, full = shards_on_disk(tmp_path)
    pieces = []
    for piece in iter_shard_vectors(shards, start=5):
        assert not mapped_shards(tmp_path)
        pieces.append(piece)
    assert [len(p) for p in pieces] == [5, 10, 7]  # the rest of shard 0, then whole shards
    assert all(p.dtype == np.float32 for p in pieces)
    np.testing.assert_array_equal(np.concatenate(pieces), full[5:].astype(np.float32))


def test_the_training_sample_is_seeded_and_reads_the_rows_it_names(tmp_path: Path) -> None:
    shards, full = shards_on_disk(tmp_path)
    sample = training_sample(shards, 12, seed=3)
    again = training_sample(shards, 12, seed=3)
    np.testing.assert_array_equal(sample, again)
    positions = np.sort(np.random.default_rng(3).choice(ROWS, size=12, replace=False))
    np.testing.assert_array_equal(sample, full[positions].astype(np.float32))
    np.testing.assert_array_equal(training_sample(shards, 100), full.astype(np.float32))  # fewer rows than asked
    assert not mapped_shards(tmp_path)
