"""``ragroute index build --executor ray`` on a local CPU Ray instance with one actor: the shards it writes are the
local executor's (same rows, same batches), and the index built from them answers queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index.config import IndexConfig
from index.corpus_build import build_store
from index.index_build import build_index
from ragroute.rag.corpus import DEMO_CORPUS
from ragroute.rag.pipeline import PipelineConfig, RAGPipeline


@pytest.mark.slow
def test_ray_shards_match_the_local_ones(tmp_path: Path) -> None:
    pytest.importorskip("ray.data")
    store = tmp_path / "store"
    build_store([str(DEMO_CORPUS)], store)
    common = {"sparse": False, "rows_per_shard": 16, "device": "cpu", "dense_batch_size": 8}
    build_index(store, tmp_path / "ray", IndexConfig(**common, executor="ray", ray_actors=1))
    build_index(store, tmp_path / "local", IndexConfig(**common))
    shards = sorted((tmp_path / "local" / "embeddings").glob("shard_*.npy"))
    assert len(shards) == 4  # 60 demo documents, 16 per shard
    for local in shards:
        remote = np.load(tmp_path / "ray" / "embeddings" / local.name)
        np.testing.assert_allclose(remote.astype(np.float32), np.load(local).astype(np.float32), atol=2e-3)
    cfg = PipelineConfig(corpus=str(store), index=str(tmp_path / "ray"), retriever="dense", reranker="bi-encoder",
                         retrieval_n=5, final_n=3)
    docs = RAGPipeline.from_config(cfg).prepare("Which mosquito transmits malaria?").docs
    assert docs[0].id == "DEMO-003"
