"""Embedding shards on disk (ragroute.rag.shards): rows by store position across shards, read without mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psutil
import pytest

from ragroute.errors import UserError
from ragroute.rag.shards import EmbeddingShards, ensure_info, shard_path, write_shard

DIM, PER_SHARD, ROWS = 16, 10, 25


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, np.ndarray]:
    ensure_info(tmp_path, "model-x", DIM, PER_SHARD)
    full = np.random.default_rng(0).standard_normal((ROWS, DIM)).astype(np.float16)
    for k in range(-(-ROWS // PER_SHARD)):
        write_shard(tmp_path, k, full[k * PER_SHARD : (k + 1) * PER_SHARD])
    return tmp_path, full


def test_rows_come_back_in_the_order_asked_across_shards(written: tuple[Path, np.ndarray]) -> None:
    directory, full = written
    shards = EmbeddingShards(directory, ROWS)
    positions = [24, 0, 13, 13, 9, 20, 10]
    got = shards.vectors(positions)
    assert got.dtype == np.float32 and got.shape == (len(positions), DIM)
    np.testing.assert_array_equal(got, full[positions].astype(np.float32))
    assert shards.vectors([]).shape == (0, DIM)
    # Whole shards (the FAISS fill) are the same rows, memory-mapped.
    np.testing.assert_array_equal(np.asarray(shards.shard(2)), full[20:])


def test_rows_by_position_do_not_map_the_shard_files(written: tuple[Path, np.ndarray]) -> None:
    directory, _ = written
    shards = EmbeddingShards(directory, ROWS)
    shards.vectors(list(range(ROWS)))
    mapped = {Path(m.path) for m in psutil.Process().memory_maps(grouped=True)}
    assert not mapped & {shard_path(directory, k) for k in range(3)}
    shards.close()


def test_a_truncated_shard_is_a_clear_error(written: tuple[Path, np.ndarray]) -> None:
    directory, _ = written
    path = shard_path(directory, 1)
    path.write_bytes(path.read_bytes()[: -DIM * 2 * 3])  # the last three rows cut off
    shards = EmbeddingShards(directory, ROWS)
    assert shards.vectors([10, 16]).shape == (2, DIM)
    with pytest.raises(UserError, match=r"shard_000001\.npy ends before row 9"):
        shards.vectors([19])


def test_threads_reading_at_once_get_their_rows_and_open_each_shard_once(written: tuple[Path, np.ndarray]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    directory, full = written
    shards = EmbeddingShards(directory, ROWS)
    asks = [list(np.random.default_rng(seed).integers(0, ROWS, size=40)) for seed in range(32)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(shards.vectors, asks))
    for positions, vectors in zip(asks, got, strict=True):
        np.testing.assert_array_equal(vectors, full[positions].astype(np.float32))
    opened = [Path(f.path) for f in psutil.Process().open_files() if Path(f.path).parent == directory]
    assert sorted(opened) == [shard_path(directory, k) for k in range(3)]
    shards.close()
    assert not [f for f in psutil.Process().open_files() if Path(f.path).parent == directory]
