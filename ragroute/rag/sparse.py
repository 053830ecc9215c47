"""BM25 over an on-disk tantivy index (the sparse index ``ragroute index build`` writes for large corpora).

Why tantivy: bm25s builds its whole score matrix in memory (5M abstracts peaked at 15.2 GB); tantivy (an
embedded Lucene-like engine) writes segments with a bounded writer heap and searches memory-mapped files, so
build and query memory stay flat in the corpus size (docs/benchmarks/retrieval.md has the measurement).

The analyzer is today's bm25s one, rebuilt from tantivy parts: the same token pattern (``\\b\\w\\w+\\b``),
lower-case, bm25s' English stop words, the Snowball English stemmer. Queries are analyzed by that same analyzer
and sent as term queries (never through tantivy's query parser), so a question holding ``: " ( )`` or ``AND``
cannot break or change the query. Scoring is tantivy's BM25 (Lucene's, k1 = 1.2, b = 0.75; not configurable).

Layout of ``INDEX_DIR/sparse/``: tantivy's own files. Schema: ``text`` (indexed with term frequencies, not
stored) and ``pos`` (u64, indexed + fast field: the document's row position in the corpus store).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.errors import UserError

TOKEN_PATTERN = r"\b\w\w+\b"  # bm25s' default (?u)\b\w\w+\b; Rust regexes are Unicode-aware by default
ANALYZER_NAME = "ragroute_en"
TEXT_FIELD = "text"
POS_FIELD = "pos"


@dataclass
class AnalyzerSettings:
    """What the index's terms are made of; recorded in the index manifest, so queries use the same."""

    stemmer: str = "english"
    stopwords: str = "en"


def _tantivy() -> Any:
    try:
        import tantivy
    except ImportError:
        raise UserError("the sparse index needs tantivy (pip install tantivy)") from None
    return tantivy


def stopword_list(name: str) -> list[str]:
    if name == "none":
        return []
    import bm25s.stopwords

    words = getattr(bm25s.stopwords, f"STOPWORDS_{name.upper()}", None)
    if words is None:
        raise UserError(f"unknown stop-word list '{name}' (bm25s names: en, de, fr, ...; or 'none')")
    return list(words)


def make_analyzer(settings: AnalyzerSettings) -> Any:
    tantivy = _tantivy()
    builder = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(TOKEN_PATTERN)).filter(
        tantivy.Filter.lowercase()
    )
    if settings.stopwords != "none":
        builder = builder.filter(tantivy.Filter.custom_stopword(stopword_list(settings.stopwords)))
    if settings.stemmer != "none":
        builder = builder.filter(tantivy.Filter.stemmer(settings.stemmer))
    return builder.build()


def make_schema() -> Any:
    tantivy = _tantivy()
    builder = tantivy.SchemaBuilder()
    builder.add_text_field(TEXT_FIELD, stored=False, tokenizer_name=ANALYZER_NAME, index_option="freq")
    builder.add_unsigned_field(POS_FIELD, stored=False, indexed=True, fast=True)
    return builder.build()


def open_tantivy(directory: Path, settings: AnalyzerSettings, create: bool = False) -> Any:
    """The tantivy index in ``directory`` with the analyzer registered (``create``: a new empty one)."""
    tantivy = _tantivy()
    if create:
        directory.mkdir(parents=True, exist_ok=True)
        index = tantivy.Index(make_schema(), path=str(directory), reuse=True)
    else:
        if not tantivy.Index.exists(str(directory)):
            raise UserError(f"no sparse index in {directory} (build it with `ragroute index build`)")
        index = tantivy.Index.open(str(directory))
    index.register_tokenizer(ANALYZER_NAME, make_analyzer(settings))
    return index


class TantivyBM25:
    """Query side: BM25 top-k of analyzed query terms, as (store positions, scores)."""

    def __init__(self, directory: str | Path, settings: AnalyzerSettings, live: np.ndarray | None = None) -> None:
        self.directory = Path(directory)
        self.settings = settings
        self.live = live  # the store's live rows: dead ones are deleted by updates, and filtered here as well
        self.index = open_tantivy(self.directory, settings)
        self.analyzer = make_analyzer(settings)
        self.searcher = self.index.searcher()

    @property
    def n_docs(self) -> int:
        return int(self.searcher.num_docs)

    def query(self, text: str) -> Any:
        """An OR of term queries over the analyzed words (repeats kept once); None when no term is left."""
        tantivy = _tantivy()
        terms = list(dict.fromkeys(self.analyzer.analyze(text)))
        if not terms:
            return None
        schema = self.index.schema
        return tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(schema, TEXT_FIELD, t, index_option="freq"))
             for t in terms]
        )

    def _top(self, query: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        hits = self.searcher.search(query, limit=k, count=False).hits
        if not hits:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        positions = self.searcher.fast_field_values(POS_FIELD, [address for _, address in hits])
        return np.asarray(positions, dtype=np.int64), np.asarray([s for s, _ in hits], dtype=np.float32)

    def search_one(self, text: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        query = self.query(text)
        if query is None or k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        fetch = k
        while True:
            positions, scores = self._top(query, fetch)
            if self.live is None:
                return positions, scores
            keep = self.live[positions]
            if keep.sum() >= k or len(positions) < fetch:
                return positions[keep][:k], scores[keep][:k]
            fetch *= 4  # dead rows not yet deleted from the index crowded the top: ask for more

    def search(self, queries: list[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(store positions, scores) per query, best first, at most ``k`` live ones; only documents sharing a
        term with the query (a query of only stop words finds nothing)."""
        return [self.search_one(q, k) for q in queries]
