"""The filter stage: drop repeated texts and weak matches, keep the best ``final_n``."""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from ragroute.rag.retrieve import Hit, as_corpus

_SPACE = re.compile(r"\s+")


def text_key(text: str) -> str:
    """Texts equal up to case and whitespace count as duplicates (reprints, errata and merged sources repeat
    an abstract under another id)."""
    return _SPACE.sub(" ", text).strip().lower()


class DuplicateKeys:
    """``text_key`` of corpus documents, computed for the candidates a question gets (never for the whole
    corpus) and remembered in a bounded LRU cache (a served corpus sees the same popular documents again and
    again)."""

    def __init__(self, corpus: Any, max_cached: int = 100_000) -> None:
        self.corpus = as_corpus(corpus)  # a list of documents, a store, anything with document(pos)
        self.max_cached = max_cached
        self._keys: OrderedDict[int, str] = OrderedDict()

    def __call__(self, doc: int) -> str:
        key = self._keys.get(doc)
        if key is None:
            key = self._keys[doc] = text_key(self.corpus.document(doc).text)
            if len(self._keys) > self.max_cached:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(doc)
        return key


def filter_hits(
    hits: list[Hit], keys: DuplicateKeys, final_n: int, min_score: float | None = None, dedup: bool = True
) -> list[Hit]:
    """Keep hits in order: skip those under ``min_score`` and (with ``dedup``) those repeating the text of an
    earlier hit; stop at ``final_n``."""
    kept: list[Hit] = []
    seen: set[str] = set()
    for hit in hits:
        if min_score is not None and hit.score < min_score:
            continue
        if dedup:
            key = keys(hit.doc)
            if key in seen:
                continue
            seen.add(key)
        kept.append(hit)
        if len(kept) == final_n:
            break
    return kept
