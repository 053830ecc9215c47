"""``ragroute index build`` and ``ragroute index update``: the sparse and dense indexes of a corpus store.

    build:  manifest (state building) ▶ tantivy from iter_texts (commits; resumes after the last) ▶ embedding
            shards (done shards skipped) ▶ FAISS trained on a seeded sample, filled shard by shard ▶ manifest
            (state complete)
    update: update_store(NEWFILES) ▶ sync: rows the index lacks are added to both indexes (new shards, FAISS add),
            rows the store marks dead are deleted from tantivy (and filtered by the live mask at query time,
            which is all FAISS needs) ▶ manifest (new store fingerprint, history entry)

Every step can be killed and rerun: a build resumes, and ``index update`` without ``--input`` finishes an
interrupted update (the store update is committed atomically first). The layout and the manifest are described
in :mod:`ragroute.rag.built_index`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from index.config import IndexConfig
from index.corpus_write import time_stamp, write_json_atomic
from ragroute.errors import UserError
from ragroute.rag.built_index import INDEX_FORMAT, MANIFEST, SPARSE_DIR, doc_model_label, read_index_manifest
from ragroute.rag.shards import EMBEDDINGS_DIR, EmbeddingShards, ensure_info
from ragroute.rag.sparse import AnalyzerSettings
from ragroute.rag.store import CorpusStore

log = logging.getLogger("ragroute.index")


def new_manifest(store: CorpusStore, cfg: IndexConfig) -> dict[str, Any]:
    sparse = None
    if cfg.sparse:
        sparse = {"engine": "tantivy", "stemmer": cfg.bm25_stemmer, "stopwords": cfg.bm25_stopwords,
                  "parts": cfg.sparse_parts}
    dense = None
    if cfg.dense:
        dense = {"model": doc_model_label(cfg.dense_model, cfg.dense_doc_model), "dim": None, "factory": cfg.factory,
                 "metric": "inner_product", "nprobe": cfg.nprobe, "ef_search": cfg.ef_search,
                 "rows_per_shard": cfg.rows_per_shard, "train_size": cfg.train_size,
                 "max_seq_length": cfg.dense_max_seq_length}
    return {"format": INDEX_FORMAT, "state": "building", "store_fingerprint": store.fingerprint,
            "store_rows_indexed": 0, "store": str(store.directory), "sparse": sparse, "dense": dense,
            "config": dataclasses.asdict(cfg), "history": []}


def _same_build(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The settings in which an existing (unfinished or complete) index differs from this build."""
    found = []
    for key in ("store_fingerprint", "sparse", "dense"):
        a, b = old.get(key), new.get(key)
        if key == "dense" and a and b:
            a, b = {**a, "dim": None}, {**b, "dim": None}
        if key == "sparse" and a and b:  # indexes from before parts existed have one
            a, b = {"parts": 1, **a}, {"parts": 1, **b}
        if a != b:
            found.append(f"{key}: {old.get(key)!r} (in the index) vs {new.get(key)!r} (this build)")
    return found


def start_build(out: Path, store: CorpusStore, cfg: IndexConfig) -> dict[str, Any]:
    """The manifest to build under: a new one, or the unfinished one found in ``out`` (same settings)."""
    manifest = new_manifest(store, cfg)
    if (out / MANIFEST).is_file():
        old = read_index_manifest(out)
        found = _same_build(old, manifest)
        if found:
            raise UserError(f"{out} holds an index built differently ({'; '.join(found)}): choose another --out, or "
                            f"`ragroute index update` it if only the corpus version changed")
        if old["state"] == "complete":
            log.info("the index in %s is complete and up to date", out)
            return old
        log.info("resuming the unfinished index build in %s", out)
        manifest["history"] = old["history"]
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


def sync_sparse(out: Path, store: CorpusStore, cfg: dict[str, Any], index_cfg: IndexConfig) -> None:
    """Bring the tantivy index up to the store: add the rows after its last commit, delete the dead rows."""
    from index.dense_build import Progress
    from index.sparse_build import add_documents, delete_positions, resume_points

    settings = AnalyzerSettings(stemmer=cfg["stemmer"], stopwords=cfg["stopwords"])
    directory, parts = out / SPARSE_DIR, cfg.get("parts", 1)
    start = min(resume_points(directory, settings, parts))
    if start < len(store):
        log.info("sparse index: adding rows %d..%d", start, len(store) - 1)
        progress = Progress(len(store) - start, what="sparse index: indexed")
        try:
            add_documents(directory, settings, store.iter_texts(start, batch_size=4096), parts=parts,
                          heap_mb=index_cfg.sparse_heap_mb, threads=index_cfg.sparse_threads,
                          commit_every=index_cfg.sparse_commit_every,
                          on_batch=progress)
        finally:
            progress.close()
    dead = np.flatnonzero(~store.live_mask())
    if len(dead):
        delete_positions(directory, settings, dead, parts=parts)  # idempotent: deleting a deleted row is a no-op


def sync_dense(out: Path, store: CorpusStore, manifest: dict[str, Any], cfg: IndexConfig) -> None:
    """Embed the rows the shards lack, then train (first build) or extend the FAISS index."""
    from index.dense_build import add_vectors, build_faiss, embed_all, write_index_atomic
    from index.embedder import DocumentEmbedder
    from ragroute.rag.ann import DENSE_FILE

    dense = manifest["dense"]
    directory = out / EMBEDDINGS_DIR
    with DocumentEmbedder(cfg) as embedder:
        dense["dim"] = embedder.dim
        ensure_info(directory, dense["model"], embedder.dim, dense["rows_per_shard"])
        if cfg.executor == "ray":
            from index.ray_embed import embed_with_ray

            embed_with_ray(store, directory, len(store), cfg)
        else:
            embed_all(store, directory, len(store), dense["rows_per_shard"], embedder)
    shards = EmbeddingShards(directory, len(store))
    path = out / DENSE_FILE
    if not path.is_file():
        build_faiss(out, shards, dense["factory"], dense["train_size"])
        return
    import faiss

    index = faiss.read_index(str(path))
    if index.ntotal < len(store):
        add_vectors(index, shards, int(index.ntotal))
        write_index_atomic(index, path)


def _sparse_in_child(out: str, store_dir: str, sparse: dict[str, Any], cfg: IndexConfig, log_level: int) -> None:
    from ragroute.cli import configure_logging

    configure_logging(log_level)
    sync_sparse(Path(out), CorpusStore.open(store_dir), sparse, cfg)


def sync_indexes(out: Path, store: CorpusStore, manifest: dict[str, Any], cfg: IndexConfig) -> None:
    """Bring both indexes up to the store. They are independent: with ``parallel_stages`` the sparse index is
    built in a second process while this one embeds and fills FAISS (on a GPU machine the tantivy writer, CPU
    work, then hides behind the embedding instead of adding to it)."""
    if not (manifest["sparse"] and manifest["dense"] and cfg.parallel_stages):
        if manifest["sparse"]:
            sync_sparse(out, store, manifest["sparse"], cfg)
        if manifest["dense"]:
            sync_dense(out, store, manifest, cfg)
        return
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from ragroute.reaper import reap_descendants_on_exit

    reap_descendants_on_exit()  # a SIGKILLed build must not leave its sparse writer running
    log.info("building the sparse index in a second process while the dense index is built")
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        sparse = pool.submit(_sparse_in_child, str(out), str(store.directory), manifest["sparse"], cfg,
                             logging.getLogger("ragroute").getEffectiveLevel())
        sync_dense(out, store, manifest, cfg)
        sparse.result()


def finish(out: Path, store: CorpusStore, manifest: dict[str, Any], action: str, started: float) -> dict[str, Any]:
    live = store.live_mask()
    manifest.update(state="complete", store_fingerprint=store.fingerprint, store_rows_indexed=len(store))
    manifest["history"].append({"action": action, "at": time_stamp(), "store_fingerprint": store.fingerprint,
                                "rows": len(store), "dead": int((~live).sum()),
                                "seconds": round(time.monotonic() - started, 1)})
    write_json_atomic(out / MANIFEST, manifest)
    log.info("index %s: %s done, %d rows (%d dead) in %.0f s", out, action, len(store), int((~live).sum()),
             time.monotonic() - started)
    return manifest


def build_index(store_dir: str | Path, out_dir: str | Path, cfg: IndexConfig) -> dict[str, Any]:
    """Build (or resume building) the indexes of the store at ``store_dir`` into ``out_dir``."""
    started = time.monotonic()
    store = CorpusStore.open(store_dir)
    out = Path(out_dir)
    manifest = start_build(out, store, cfg)
    if manifest["state"] == "complete":
        return manifest
    sync_indexes(out, store, manifest, cfg)
    return finish(out, store, manifest, "build", started)


def update_index(store_dir: str | Path, index_dir: str | Path, inputs: list[str], executor: str = "local") -> dict[str, Any]:
    """Apply ``inputs`` to the store (adds, replacements, deletions), then bring the index up to the store."""
    started = time.monotonic()
    out = Path(index_dir)
    manifest = read_index_manifest(out)
    store = CorpusStore.open(store_dir)
    known = {h.get("fingerprint") for h in store.manifest.get("history", [])} | {store.fingerprint}
    if manifest["store_fingerprint"] not in known:
        raise UserError(f"the index in {out} was built from corpus version {manifest['store_fingerprint']}, which "
                        f"is not in the history of the store {store_dir} (now {store.fingerprint}): it belongs to "
                        "another store")
    if inputs:
        from index.corpus_build import update_store

        result = update_store(store_dir, inputs)
        log.info("store updated: %d new rows from %d, %d rows now dead", result.n_new, result.first_new_pos,
                 len(result.dead_positions))
        store = CorpusStore.open(store_dir)
    manifest["state"] = "building"
    write_json_atomic(out / MANIFEST, manifest)
    cfg = IndexConfig(**{**manifest["config"], "executor": executor})
    sync_indexes(out, store, manifest, cfg)
    return finish(out, store, manifest, "update", started)
