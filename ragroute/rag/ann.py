"""Dense retrieval over a FAISS index built by ``ragroute index build`` (query side).

The index is named by a FAISS factory string (``Flat`` for small corpora, ``IVF4096,PQ48`` and the like for
large ones; inner product over L2-normalised vectors = cosine) and read memory-mapped where the type allows
(``IO_FLAG_MMAP``: flat codes and IVF inverted lists stay in the page cache, not in the process). FAISS ids are
store positions (documents are added in position order). A compressed index (PQ) only proposes candidates:
the best ``refine_k`` are re-scored exactly with the fp16 vectors of the embedding shards
(:mod:`ragroute.rag.shards`), and dead rows (deleted or superseded by an update) are dropped before the top k.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.errors import UserError
from ragroute.rag.dense import DenseEncoder
from ragroute.rag.shards import EmbeddingShards

log = logging.getLogger(__name__)

DENSE_FILE = "dense.faiss"


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise UserError("the dense index needs FAISS (pip install faiss-cpu)") from None
    return faiss


def read_faiss(path: Path) -> Any:
    faiss = _faiss()
    if not path.is_file():
        raise UserError(f"no dense index at {path} (run `ragroute index build`)")
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError:  # a type without a memory-mapped reader: read it into memory
        return faiss.read_index(str(path))


def set_search_knobs(index: Any, nprobe: int | None, ef_search: int | None) -> None:
    """Apply ``nprobe`` (IVF) and ``efSearch`` (HNSW) where the index has them (ignored elsewhere)."""
    faiss = _faiss()
    params = faiss.ParameterSpace()
    for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
        if value is None:
            continue
        try:
            params.set_index_parameter(index, name, value)
        except RuntimeError:
            log.debug("index %s has no parameter %s", type(index).__name__, name)


class AnnIndex:
    """The interface of :class:`ragroute.rag.dense.DenseIndex` (``encoder``, ``search``, ``similarities``) over
    a FAISS index + embedding shards, filtered by the store's live mask."""

    def __init__(
        self,
        directory: str | Path,
        encoder: DenseEncoder,
        shards: EmbeddingShards,
        live: np.ndarray | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        refine_k: int = 100,
    ) -> None:
        self.directory = Path(directory)
        self.encoder = encoder
        self.shards = shards
        self.live = live
        self.refine_k = refine_k
        self.index = read_faiss(self.directory / DENSE_FILE)
        if self.index.ntotal != shards.rows:
            raise UserError(
                f"the dense index in {self.directory} holds {self.index.ntotal} vectors but its manifest says "
                f"{shards.rows}; rebuild with `ragroute index build`"
            )
        set_search_knobs(self.index, nprobe, ef_search)

    def similarities(self, query_vectors: np.ndarray, doc_positions: list[int] | None = None) -> np.ndarray:
        """Exact cosine of each query to ``doc_positions`` (from the fp16 shards)."""
        if doc_positions is None:
            raise ValueError("an ANN index scores given positions only")
        return query_vectors @ self.shards.vectors(doc_positions).T

    def _candidates(self, vectors: np.ndarray, fetch: int) -> np.ndarray:
        _, ids = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), fetch)
        return ids

    def search(self, queries: list[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(store positions, exact cosine) per query, best first, at most ``k`` live documents."""
        vectors = self.encoder.encode_queries(queries)
        total = int(self.index.ntotal)
        fetch = min(max(k, self.refine_k), total)
        results = []
        for vector in vectors:
            while True:
                ids = self._candidates(vector[None, :], fetch)[0]
                ids = ids[ids >= 0]
                exhausted = len(ids) < fetch or fetch >= total  # the probed lists hold no more
                if self.live is not None:
                    ids = ids[self.live[ids]]
                if len(ids) >= k or exhausted:
                    break
                fetch = min(fetch * 4, total)  # dead rows crowded the candidates: ask for more
            scores = self.similarities(vector[None, :], ids.tolist())[0] if len(ids) else np.empty(0, np.float32)
            order = np.argsort(-scores, kind="stable")[:k]
            results.append((ids[order], scores[order].astype(np.float32)))
        return results
