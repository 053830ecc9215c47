"""The document encoder of ``ragroute index build``: texts -> L2-normalised vectors, fp16 on a GPU.

On a GPU the forward pass is rarely the limit: tokenizing (in the calling process, on the CPU) and moving each
batch are. One H200 embedded 2,059 documents/s through a single sentence-transformers process with both a 6-layer
and a 12-layer encoder (docs/benchmarks/retrieval.md section 4): the rate of the tokenizer, not of the GPU. So
the GPU path runs several encoder processes per GPU with sentence-transformers' own multi-process pool: each
tokenizes its chunks on its own core and feeds the same GPU, and the calls overlap.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from index.config import IndexConfig

log = logging.getLogger("ragroute.index")

BATCHES_PER_CALL = 16  # encoder batches per call (and per pool worker): sentence-transformers sorts a call's texts
# by length before batching them, so wider calls pad less
MAX_PROCESSES_PER_GPU = 8


def auto_processes(device: str, cpus: int | None = None) -> int:
    """Encoder processes for ``dense_processes: 0``: one on a CPU (the forward pass already uses every core);
    on a GPU one per two CPU cores, at most 8 (tokenizing ~2-4k documents/s each keeps an H200 busy)."""
    if not device.startswith("cuda"):
        return 1
    cpus = cpus or len(os.sched_getaffinity(0))
    return max(1, min(MAX_PROCESSES_PER_GPU, cpus // 2))


class DocumentEmbedder:
    """``embedder(texts)`` -> (n, dim) float32 normalised vectors; ``texts_per_call`` is the call size the build
    uses (fixed, so a resumed shard is embedded in the same chunks). Close it (or use ``with``) to stop the pool."""

    def __init__(self, cfg: IndexConfig) -> None:
        from ragroute.rag.dense import DenseEncoder

        encoder = DenseEncoder(cfg.dense_model, cfg.dense_doc_model, cfg.device, cfg.dense_batch_size,
                               cfg.dense_max_seq_length, query_threads=None, query_quantization="none")
        self.model = encoder.doc_model
        self.device = str(self.model.device)
        if self.device.startswith("cuda"):
            self.model.half()
        self.encode = encoder.encode_documents
        self.batch_size = cfg.dense_batch_size
        self.dim = int(self.model.get_embedding_dimension())
        self.processes = cfg.dense_processes or auto_processes(self.device)
        self.texts_per_call = self.batch_size * BATCHES_PER_CALL * self.processes
        self._pool: dict[str, Any] | None = None

    def __call__(self, texts: list[str]) -> np.ndarray:
        if self.processes == 1:
            return self.encode(texts)
        if self._pool is None:  # started on first use: a build whose shards are all done needs no workers
            from ragroute.reaper import reap_descendants_on_exit

            reap_descendants_on_exit()  # a SIGKILLed build must not leave its workers holding the GPU
            log.info("starting %d encoder processes on %s", self.processes, self.device)
            self._pool = self.model.start_multi_process_pool([self.device] * self.processes)
        vectors = self.model.encode_document(
            texts, pool=self._pool, batch_size=self.batch_size, chunk_size=self.batch_size * BATCHES_PER_CALL,
            normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def close(self) -> None:
        if self._pool is not None:
            self.model.stop_multi_process_pool(self._pool)
            self._pool = None

    def __enter__(self) -> DocumentEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
