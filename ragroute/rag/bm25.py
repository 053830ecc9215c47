"""BM25 with ``bm25s``: built once, saved to disk, loaded memory-mapped, searched in batches.

``bm25s`` precomputes every (term, document) BM25 score into a sparse matrix, so a query is a sum of a few
posting lists plus a top-k selection. Queries go through the same tokenizer as the documents (lower-case,
English stop words, Snowball stemming via PyStemmer) and unknown terms are dropped before scoring.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.errors import UserError

SETTINGS_FILE = "ragroute_bm25.json"
# Below this many documents numpy scoring takes well under a millisecond and numba's start-up compile
# (seconds) would never pay for itself; above it the JIT scorer is several times faster.
NUMBA_MIN_DOCS = 100_000


@dataclass(frozen=True)
class BM25Settings:
    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"  # bm25s variants: robertson, lucene, atire, bm25l, bm25+
    stemmer: str = "english"  # a PyStemmer language, or "none"
    stopwords: str = "en"  # a bm25s stop-word list name, or "none"


def make_stemmer(language: str) -> Any:
    """A PyStemmer stemmer (``None`` for "none"); bm25s calls its ``stemWords`` on the vocabulary."""
    if language == "none":
        return None
    try:
        import Stemmer
    except ImportError:
        raise UserError(
            f"bm25_stemmer={language} needs PyStemmer (pip install PyStemmer), or set bm25_stemmer=none"
        ) from None
    try:
        return Stemmer.Stemmer(language)
    except KeyError:
        raise UserError(
            f"unknown bm25_stemmer language '{language}' (PyStemmer: english, german, ...)"
        ) from None


def _stopwords(name: str) -> str | list[str]:
    return [] if name == "none" else name


def pick_backend(backend: str, n_docs: int) -> str:
    if backend != "auto":
        return backend
    if n_docs < NUMBA_MIN_DOCS:
        return "numpy"
    from importlib.util import find_spec

    return "numba" if find_spec("numba") is not None else "numpy"


class BM25Index:
    """A ``bm25s.BM25`` model plus the tokenizer settings its vocabulary was built with."""

    def __init__(self, model: Any, settings: BM25Settings) -> None:
        self.model = model
        self.settings = settings
        self._stemmer = make_stemmer(settings.stemmer)
        self.vocab: dict[str, int] = model.vocab_dict

    @property
    def n_docs(self) -> int:
        return int(self.model.scores["num_docs"])

    # ---------------------------------------------------------------------------------------- building

    @classmethod
    def build(cls, texts: list[str], settings: BM25Settings, backend: str = "auto") -> BM25Index:
        import bm25s

        tokens = bm25s.tokenize(
            texts,
            stopwords=_stopwords(settings.stopwords),
            stemmer=make_stemmer(settings.stemmer),
            show_progress=False,
        )
        return cls.from_tokenized(tokens, settings, backend=backend)

    @classmethod
    def from_tokenized(cls, tokenized: Any, settings: BM25Settings, backend: str = "auto") -> BM25Index:
        """Index already tokenized documents (a ``bm25s.tokenization.Tokenized``: ids per document + vocab);
        the vocabulary must come from the same tokenizer settings, or queries will not match."""
        import bm25s

        model = bm25s.BM25(
            k1=settings.k1,
            b=settings.b,
            method=settings.method,
            backend=pick_backend(backend, len(tokenized.ids)),
            csc_backend="scipy",
        )
        model.index(tokenized, show_progress=False)
        return cls(model, settings)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.model.save(directory, show_progress=False)
        (directory / SETTINGS_FILE).write_text(json.dumps(asdict(self.settings), indent=2))

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True, backend: str = "auto") -> BM25Index:
        """Load a saved index; with ``mmap`` the score matrix stays on disk and the OS pages in what queries
        touch, so a large index opens instantly and is shared between processes."""
        import bm25s

        directory = Path(directory)
        settings = BM25Settings(**json.loads((directory / SETTINGS_FILE).read_text()))
        params = json.loads((directory / "params.index.json").read_text())
        model = bm25s.BM25.load(
            directory, mmap=mmap, show_progress=False, backend=pick_backend(backend, int(params["num_docs"]))
        )
        return cls(model, settings)

    # ---------------------------------------------------------------------------------------- querying

    def tokenize_queries(self, queries: list[str]) -> list[list[int]]:
        """Vocabulary ids of each query's terms; unknown terms and stop words are dropped (may leave none)."""
        import bm25s

        token_lists = bm25s.tokenize(
            queries,
            stopwords=_stopwords(self.settings.stopwords),
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )
        return [[self.vocab[t] for t in tokens if t in self.vocab and t != ""] for tokens in token_lists]

    def search(self, queries: list[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(document positions, scores) per query, best first, at most ``k``; only documents sharing a term
        with the query (a query of only unknown terms or stop words finds nothing)."""
        k = min(k, self.n_docs)
        token_ids = self.tokenize_queries(queries)
        results: list[tuple[np.ndarray, np.ndarray]] = [
            (np.empty(0, np.int64), np.empty(0, np.float32))
        ] * len(queries)
        asked = [i for i, ids in enumerate(token_ids) if ids]
        if asked:
            docs, scores = self.model.retrieve(
                [token_ids[i] for i in asked], k=k, show_progress=False, n_threads=0
            )
            for row, i in enumerate(asked):
                matched = np.asarray(scores[row]) > 0
                results[i] = (np.asarray(docs[row])[matched], np.asarray(scores[row])[matched])
        return results

    def candidate_scores(self, text: str, positions: np.ndarray) -> np.ndarray:
        """The BM25 score of each document at ``positions`` for the query ``text`` (0 where it shares no term).
        bm25s scores the whole corpus at once, which for the small corpora it serves takes well under a
        millisecond."""
        token_ids = self.tokenize_queries([text])[0]
        if not token_ids or not len(positions):
            return np.zeros(len(positions), np.float32)
        return np.asarray(self.model.get_scores_from_ids(token_ids), np.float32)[np.asarray(positions, np.int64)]

    def index_bytes(self) -> int:
        scores = self.model.scores
        return int(sum(scores[name].nbytes for name in ("data", "indices", "indptr")))
