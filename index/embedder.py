"""The document encoder of ``ragroute index build``: store rows -> L2-normalised vectors, fp16 on a GPU.

On a GPU the forward pass is not the limit, the CPU work before it is: one sentence-transformers process
(read, tokenize, convert to tensors, forward) embedded 1,560 documents/s on an H200 whose bare MiniLM forward
pass runs 40,000/s, and several such processes sharing the GPU reached only ~6,000/s (each runs its own threads
on the same cores). So on a GPU the rows are read and tokenized by the worker processes of a torch
``DataLoader`` (one thread each), and this process only copies pinned batches to the GPU and runs the model.

A chunk (``texts_per_call`` rows) is sorted by length and cut into batches as sentence-transformers does it, so
the batches are a function of the chunk alone: a resumed build embeds the same batches. On a CPU (the forward
pass is the limit and uses every core) and for encoders with a document prompt, rows go through
sentence-transformers' own ``encode_document``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from index.config import IndexConfig

log = logging.getLogger("ragroute.index")

BATCHES_PER_CALL = 16  # encoder batches per chunk: sorting a wider chunk by length pads less
MAX_WORKERS = 16


def auto_workers(device: str, cpus: int | None = None) -> int:
    """Tokenizing workers for ``dense_workers: -1``: none on a CPU; on a GPU every core but two (this process and
    the sparse build's writer need some), at most 16 (each tokenizes ~1.5-2k abstracts/s)."""
    if not device.startswith("cuda"):
        return 0
    cpus = cpus or len(os.sched_getaffinity(0))
    return max(1, min(MAX_WORKERS, cpus - 2))


class _TokenizedChunks:
    """Map-style dataset for the DataLoader: item i = (lo, hi, order, batches) of rows [lo, hi) of the store,
    read and tokenized in a worker; ``order`` sorts the chunk's texts longest first."""

    def __init__(self, store: Any, chunks: list[tuple[int, int]], tokenize: Any, batch_size: int) -> None:
        self.store, self.chunks, self.tokenize, self.batch_size = store, chunks, tokenize, batch_size

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> tuple[int, int, np.ndarray, list[dict[str, Any]]]:
        lo, hi = self.chunks[i]
        texts = [t for _, _, batch in self.store.iter_texts(lo, hi, batch_size=hi - lo) for t in batch]
        order = np.argsort([-len(t) for t in texts], kind="stable")
        ordered = [texts[j] for j in order]
        batches = [dict(self.tokenize(ordered[b : b + self.batch_size])) for b in range(0, len(ordered), self.batch_size)]
        return lo, hi, order, batches


def _init_worker(_: int) -> None:
    import torch

    torch.set_num_threads(1)  # the workers tokenize; many threads each would only fight over the cores
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


class DocumentEmbedder:
    """``embedder(texts)`` -> (n, dim) float32 normalised vectors (sentence-transformers, this process);
    ``embedder.rows(store, chunks)`` yields (lo, hi, vectors) for each chunk of store rows, through the DataLoader
    workers when there are any. ``texts_per_call`` is the fixed chunk size of a build."""

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
        self.workers = auto_workers(self.device) if cfg.dense_workers < 0 else cfg.dense_workers
        # sentence-transformers 5+ gives every model empty "query"/"document" prompts: only a non-empty one
        # changes the text the encoder sees.
        prompts = getattr(self.model, "prompts", None) or {}
        if self.workers and any(prompts.get(name) for name in ("document", "passage", "corpus")):
            log.info("the encoder has a document prompt: embedding through sentence-transformers, no workers")
            self.workers = 0
        self.texts_per_call = self.batch_size * BATCHES_PER_CALL

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.encode(texts)

    def rows(self, store: Any, chunks: list[tuple[int, int]]) -> Iterator[tuple[int, int, np.ndarray]]:
        if not self.workers:
            for lo, hi in chunks:
                texts = [t for _, _, batch in store.iter_texts(lo, hi, batch_size=hi - lo) for t in batch]
                yield lo, hi, self.encode(texts)
            return
        yield from self._rows_with_workers(store, chunks)

    def _rows_with_workers(self, store: Any, chunks: list[tuple[int, int]]) -> Iterator[tuple[int, int, np.ndarray]]:
        import torch
        from torch.utils.data import DataLoader

        tokenize = getattr(self.model, "preprocess", None) or self.model.tokenize
        loader = DataLoader(_TokenizedChunks(store, chunks, tokenize, self.batch_size), batch_size=None,
                            num_workers=self.workers, worker_init_fn=_init_worker, prefetch_factor=2,
                            pin_memory=self.device.startswith("cuda"), multiprocessing_context="fork")
        log.info("embedding with %d tokenizing workers feeding %s", self.workers, self.device)
        with torch.inference_mode():
            for lo, hi, order, batches in loader:
                parts = []
                for features in batches:
                    features = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                                for k, v in features.items()}
                    embedding = self.model(features)["sentence_embedding"]
                    parts.append(torch.nn.functional.normalize(embedding.float(), p=2, dim=1))
                vectors = np.empty((hi - lo, self.dim), dtype=np.float32)
                vectors[order] = torch.cat(parts).cpu().numpy()
                yield lo, hi, vectors

    def close(self) -> None:
        """Nothing held between calls (the DataLoader's workers end with each ``rows`` iteration)."""

    def __enter__(self) -> DocumentEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
