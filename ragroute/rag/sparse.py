"""BM25 over an on-disk tantivy index (the sparse index ``ragroute index build`` writes for large corpora).

Why tantivy: bm25s builds its whole score matrix in memory (5M abstracts peaked at 15.2 GB); tantivy (an
embedded Lucene-like engine) writes segments with a bounded writer heap and searches memory-mapped files, so
build and query memory stay flat in the corpus size (docs/benchmarks/retrieval.md has the measurement).

The analyzer is today's bm25s one, rebuilt from tantivy parts: the same token pattern (``\\b\\w\\w+\\b``),
lower-case, bm25s' English stop words, the Snowball English stemmer. Queries are analyzed by that same analyzer
and sent as term queries (never through tantivy's query parser), so a question holding ``: " ( )`` or ``AND``
cannot break or change the query. Scoring is tantivy's BM25 (Lucene's, k1 = 1.2, b = 0.75; not configurable).

Layout of ``INDEX_DIR/sparse/``: tantivy's own files, or with ``parts`` > 1 one tantivy index per part in
``sparse/part-00``, ``sparse/part-01``, ... (document at store position p in part p % parts). Schema: ``text``
(indexed with term frequencies, not stored) and ``pos`` (u64, indexed + fast field: the document's row position
in the corpus store).

Why parts: one tantivy search runs on one core (tantivy-py has no multi-threaded executor), and at 10M abstracts
a question's BM25 top 50 took ~40 ms on two cores. The parts are searched at the same time in threads (tantivy
releases the GIL) and their top k merged by score. Each part keeps its own term statistics, as Elasticsearch's
shards do: with documents dealt out by position, the parts' IDF and average length agree to sampling noise, so
the merged ranking differs from one index's only among near-equal scores.

Besides the top k of the whole corpus, ``candidate_scores`` gives the BM25 scores of a few given documents (the
bm25-rrf reranker's dense candidates): tantivy then scores only those documents, seeking to them in each query
term's postings, which at 10M documents takes milliseconds where the top k takes tens of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ragroute.errors import UserError

TOKEN_PATTERN = r"\b\w\w+\b"  # bm25s' default (?u)\b\w\w+\b; Rust regexes are Unicode-aware by default
ANALYZER_NAME = "ragroute_en"
TEXT_FIELD = "text"
POS_FIELD = "pos"
T = TypeVar("T")


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


def part_dirs(directory: Path, parts: int) -> list[Path]:
    """The tantivy index directories of a sparse index of ``parts`` parts (the directory itself for one)."""
    return [directory] if parts == 1 else [directory / f"part-{j:02d}" for j in range(parts)]


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
    """Query side: BM25 top-k of analyzed query terms, as (store positions, scores); the parts of a split index
    are searched in threads at the same time and merged by score."""

    def __init__(self, directory: str | Path, settings: AnalyzerSettings, live: np.ndarray | None = None,
                 parts: int = 1) -> None:
        self.directory = Path(directory)
        self.settings = settings
        self.live = live  # the store's live rows: dead ones are deleted by updates, and filtered here as well
        self.indexes = [open_tantivy(d, settings) for d in part_dirs(self.directory, parts)]
        self.schema = self.indexes[0].schema
        self.analyzer = make_analyzer(settings)
        self.searchers = [index.searcher() for index in self.indexes]
        self._pool: ThreadPoolExecutor | None = None

    @property
    def n_docs(self) -> int:
        return sum(int(searcher.num_docs) for searcher in self.searchers)

    def query(self, text: str) -> Any:
        """An OR of term queries over the analyzed words (repeats kept once); None when no term is left."""
        tantivy = _tantivy()
        terms = list(dict.fromkeys(self.analyzer.analyze(text)))
        if not terms:
            return None
        return tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self.schema, TEXT_FIELD, t, index_option="freq"))
             for t in terms]
        )

    def _top(self, searcher: Any, query: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        hits = searcher.search(query, limit=k, count=False).hits
        if not hits:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        positions = searcher.fast_field_values(POS_FIELD, [address for _, address in hits])
        return np.asarray(positions, dtype=np.int64), np.asarray([s for s, _ in hits], dtype=np.float32)

    def _top_live(self, searcher: Any, query: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        fetch = k
        while True:
            positions, scores = self._top(searcher, query, fetch)
            if self.live is None:
                return positions, scores
            keep = self.live[positions]
            if keep.sum() >= k or len(positions) < fetch:
                return positions[keep][:k], scores[keep][:k]
            fetch *= 4  # dead rows not yet deleted from the index crowded the top: ask for more

    def _over_parts(self, work: Callable[[int], T], parts: Sequence[int]) -> list[T]:
        """``work(j)`` for each part ``j`` of ``parts``: the first in this thread, the others at the same time in
        the pool (tantivy releases the GIL while it searches)."""
        if self._pool is None and len(parts) > 1:
            self._pool = ThreadPoolExecutor(max_workers=len(self.searchers) - 1, thread_name_prefix="sparse")
        others = [self._pool.submit(work, j) for j in parts[1:]]
        return [work(parts[0]), *(future.result() for future in others)]

    def search_one(self, text: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        query = self.query(text)
        if query is None or k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        if len(self.searchers) == 1:
            return self._top_live(self.searchers[0], query, k)
        found = self._over_parts(lambda j: self._top_live(self.searchers[j], query, k), range(len(self.searchers)))
        positions = np.concatenate([p for p, _ in found])
        scores = np.concatenate([s for _, s in found])
        best = np.lexsort((positions, -scores))[:k]  # by score, ties by position: the same order every run
        return positions[best], scores[best]

    def search(self, queries: list[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(store positions, scores) per query, best first, at most ``k`` live ones; only documents sharing a
        term with the query (a query of only stop words finds nothing)."""
        return [self.search_one(q, k) for q in queries]

    def _part_scores(self, part: int, query: Any, positions: np.ndarray) -> dict[int, float]:
        """BM25 scores of the given documents of one part: the query ANDed with a zero-scored filter on their
        positions, so tantivy visits only them and each keeps the score a full search would give it."""
        tantivy = _tantivy()
        searcher = self.searchers[part]
        only = tantivy.Query.const_score_query(
            tantivy.Query.term_set_query(self.schema, POS_FIELD, [int(p) for p in positions]), 0.0
        )
        restricted = tantivy.Query.boolean_query([(tantivy.Occur.Must, only), (tantivy.Occur.Must, query)])
        hits = searcher.search(restricted, limit=len(positions), count=False).hits
        if not hits:
            return {}
        found = searcher.fast_field_values(POS_FIELD, [address for _, address in hits])
        return {int(p): float(score) for p, (score, _) in zip(found, hits, strict=True)}

    def candidate_scores(self, text: str, positions: np.ndarray) -> np.ndarray:
        """The BM25 score of each document at ``positions`` for the query ``text`` (0 where it shares no term),
        without a search over the whole corpus: milliseconds for a few dozen candidates at 10M documents."""
        query = self.query(text)
        if query is None or not len(positions):
            return np.zeros(len(positions), np.float32)
        n = len(self.searchers)
        by_part = {j: positions[positions % n == j] for j in range(n)}
        asked = [j for j in range(n) if len(by_part[j])]  # not empty: positions is not
        found: dict[int, float] = {}
        for part_scores in self._over_parts(lambda j: self._part_scores(j, query, by_part[j]), asked):
            found.update(part_scores)
        return np.asarray([found.get(int(p), 0.0) for p in positions], np.float32)
