"""An index directory written by ``ragroute index build`` (query side): its manifest, the checks that it belongs to
the store and the embedding model a pipeline uses, and its identity for the system spec.

``INDEX_DIR/manifest.json``::

    {"format": "ragroute-index/1", "state": "building" | "complete",
     "store_fingerprint": str, "store_rows_indexed": int,
     "sparse": {"engine": "tantivy", "stemmer": ..., "stopwords": ...} | null,
     "dense": {"model": str, "dim": int, "factory": str, "metric": "inner_product", "nprobe": int | null,
               "ef_search": int | null, "rows_per_shard": int, "train_size": int} | null,
     "history": [{"action": "build" | "update", "at": ..., "store_fingerprint": ..., "rows": ..., "dead": ...}]}

    INDEX_DIR/sparse/              tantivy index (ragroute.rag.sparse)
    INDEX_DIR/embeddings/          fp16 embedding shards (ragroute.rag.shards)
    INDEX_DIR/dense.faiss          FAISS index, ids = store positions (ragroute.rag.ann)

Mismatches are found from the two manifests (never by re-hashing the corpus): an index built from another
store version, or with another document encoder than the pipeline's, is refused with both values named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragroute.errors import UserError

INDEX_FORMAT = "ragroute-index/1"
MANIFEST = "manifest.json"
SPARSE_DIR = "sparse"
BUNDLED_MODEL = "all-MiniLM-L6-v2 (bundled)"


def doc_model_label(dense_model: str | None, dense_doc_model: str | None) -> str:
    """The document encoder as configured (the bundled default by a fixed name, not its install path)."""
    return dense_doc_model or dense_model or BUNDLED_MODEL


def read_index_manifest(directory: str | Path) -> dict[str, Any]:
    from ragroute.rag.store import read_format_manifest

    return read_format_manifest(directory, INDEX_FORMAT, "an index directory", "ragroute index build")


def check_index(directory: str | Path, manifest: dict[str, Any], store_fingerprint: str, store_dir: Any,
                doc_model: str | None) -> None:
    """Refuse an unfinished index, one built from another store version, or with another document encoder."""
    if manifest.get("state") != "complete":
        raise UserError(f"the index in {directory} is unfinished (a build or update was interrupted): rerun "
                        "`ragroute index build` (or `ragroute index update` without --input) to finish it")
    if manifest["store_fingerprint"] != store_fingerprint:
        raise UserError(
            f"the index in {directory} was built from corpus version {manifest['store_fingerprint']}, but the "
            f"store {store_dir} is at version {store_fingerprint}: run `ragroute index update --store {store_dir} "
            f"--index {directory}` (or build an index for this store)"
        )
    dense = manifest.get("dense")
    if dense and doc_model is not None and dense["model"] != doc_model:
        raise UserError(
            f"the index in {directory} was embedded with {dense['model']}, but the pipeline's document encoder "
            f"is {doc_model}: set dense_model/dense_doc_model to match, or build an index with this model"
        )


def index_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """What identifies the retrieval an index gives (for the pipeline part of the system spec)."""
    dense = manifest.get("dense")
    return {
        "store_fingerprint": manifest["store_fingerprint"],
        "sparse": manifest.get("sparse"),
        "dense": None if dense is None else {k: dense.get(k) for k in ("model", "factory", "metric", "dim", "nprobe", "ef_search")},
    }
