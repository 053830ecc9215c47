"""Citations on every answer: the model's own ``[i]`` markers, else each sentence attributed after generation.

When an answer cites none of its prompt's passages, each of its sentences gets the marker of the retrieved passage
most similar to it (TF-IDF cosine over the passages and the sentence, scikit-learn). The record says which kind it
carries (``citation_source``: ``"model"`` or ``"attributed"``) and keeps it apart from the model's own text
(``cited_answer`` beside ``answer``), so citation metrics never count attributed markers as the model's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ragroute.quality import parse_citations

MODEL = "model"
ATTRIBUTED = "attributed"

# Sentence boundaries: whitespace after . ! or ?, also when a quote or bracket closes the sentence ("e.g." inside a
# sentence is followed by a space too, so such a sentence is split there: harmless, both halves get a marker).
# Splitting on them (separators kept) gives back every character of the answer.
_BOUNDARY = re.compile(r"((?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+)")
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*$")
_VERDICT_ONLY = re.compile(r"^\s*(?:yes|no|maybe)\s*[.!]?\s*$", re.IGNORECASE)


def has_own_citations(answer: str, n_docs: int) -> bool:
    """Whether the model cited at least one passage of its prompt itself."""
    return any(0 <= i < n_docs for i in parse_citations(answer))


def best_passages(sentences: Sequence[str], passages: Sequence[str]) -> list[int]:
    """Index of the most similar passage for each sentence (TF-IDF cosine; ties and no overlap: passage 0)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import linear_kernel

    vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True)
    try:
        doc_matrix = vectorizer.fit_transform(passages)
    except ValueError:  # passages hold only stop words
        return [0] * len(sentences)
    similarity = linear_kernel(vectorizer.transform(sentences), doc_matrix)
    return [int(row.argmax()) for row in similarity]


def attribute(answer: str, passages: Sequence[str]) -> tuple[str, str | None]:
    """``(answer with citations, citation_source)``; ``None`` as the source when there are no passages."""
    if not passages:
        return answer, None
    if has_own_citations(answer, len(passages)):
        return answer, MODEL
    pieces = _BOUNDARY.split(answer.strip())  # sentence, separator, sentence, ...
    claims = [i for i in range(0, len(pieces), 2) if pieces[i].strip() and not _VERDICT_ONLY.match(pieces[i])]
    if not claims:  # a bare verdict: it rests on the top-ranked passage
        return f"{answer.rstrip()} [0]", ATTRIBUTED
    for i, doc in zip(claims, best_passages([pieces[i] for i in claims], passages), strict=True):
        end = _SENTENCE_END.search(pieces[i])
        cut = end.start() if end else len(pieces[i])
        pieces[i] = f"{pieces[i][:cut]} [{doc}]{pieces[i][cut:]}"
    return "".join(pieces), ATTRIBUTED
