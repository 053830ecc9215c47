"""``ragroute index build --executor ray``: the missing embedding shards computed by Ray Data actors.

    shards to do (driver) ─▶ one row per shard ─▶ EmbedShard actors (one encoder each, GPU fp16 when given GPUs):
      read the shard's rows from the store, embed, write shard + done marker ─▶ (shard, rows) back to the driver

The store and the index directory must be on a filesystem every worker sees (a local Ray instance, or a shared
mount on a cluster). A shard is written by the actor that computed it, atomically and with its done marker, so
a killed run keeps every finished shard and the rerun computes only the rest, as the local executor does; the
FAISS index is then built on the driver from the shards.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from index.config import IndexConfig
from ragroute.errors import UserError

log = logging.getLogger("ragroute.index")


class EmbedShard:
    """A Ray Data actor: embeds whole shards (rows ``lo``..``hi`` of shard ``k``) and writes them."""

    def __init__(self, store_dir: str, directory: str, cfg: IndexConfig) -> None:
        import dataclasses

        from index.embedder import DocumentEmbedder
        from ragroute.rag.store import CorpusStore

        self.store = CorpusStore.open(store_dir)
        self.directory = Path(directory)
        self.cfg = cfg
        # One encoder per actor: Ray places the actors (several per GPU with ray_gpus_per_actor < 1).
        self.embed = DocumentEmbedder(dataclasses.replace(cfg, dense_workers=0))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from index.dense_build import embed_shards

        done = []
        for k, lo, hi in zip(batch["shard"], batch["lo"], batch["hi"], strict=True):
            embed_shards(self.store, self.directory, [(int(k), int(lo), int(hi))], self.cfg.rows_per_shard,
                         self.embed, lambda n: None)
            done.append(int(hi) - int(lo))
        return {"shard": batch["shard"], "rows": done}


def embed_with_ray(store: Any, directory: Path, rows: int, cfg: IndexConfig) -> int:
    """Compute every missing shard row on Ray actors; returns the number of documents embedded."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise UserError(f"--executor ray needs Ray Data ({exc}); pip install -e '.[ray]'") from None
    from index.dense_build import Progress, shards_todo

    todo = shards_todo(directory, rows, cfg.rows_per_shard)
    total = sum(hi - lo for _, lo, hi in todo)
    if not total:
        return 0
    connected_here = not ray.is_initialized()
    if connected_here:
        os.environ.setdefault("RAY_worker_niceness", "0")  # a local instance serves this build alone
        ray.init(address=cfg.ray_address, logging_level=logging.WARNING)
    try:
        ds = ray.data.from_items([{"shard": k, "lo": lo, "hi": hi} for k, lo, hi in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(
            EmbedShard,
            fn_constructor_kwargs={"store_dir": str(store.directory), "directory": str(directory), "cfg": cfg},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=cfg.ray_actors),
            num_gpus=cfg.ray_gpus_per_actor or None,
        )
        progress = Progress(total)
        try:
            for row in ds.iter_rows():
                progress(int(row["rows"]))
        finally:
            progress.close()
    finally:
        if connected_here:
            ray.shutdown()
    return total
