"""Answer-quality metrics shared by the router's labels and the evaluation stage.

Pure Python and cheap: the decision extractor and citation parser are regular expressions, token F1 is the
SQuAD definition, ROUGE-L comes from Google's ``rouge-score`` package (imported on first use, it pulls in
nltk). Citations follow the prompt convention of the RAG pipeline: documents are numbered from ``[0]``, and an
answer cites them as ``[0]``, ``[1, 2]``, ``[3][4]`` or ``[1-3]``.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

DECISIONS = ("yes", "no", "maybe")

# A leading verdict: "Yes.", "No,", "Maybe -", "**Yes**", "Answer: no". "Yes"/"Maybe" open a verdict whatever
# follows; a bare leading "No" may be a determiner ("No study has ..."), so it needs punctuation, the end of the
# text, or a pronoun that starts the justification ("No it does not").
_PREFIX = r"^[\s*_#>\"'`(]*(?:(?:final\s+)?(?:answer|decision|verdict|conclusion)\s*[:\-]\s*[*_\"'`]*\s*)?"
_LEADING_YES_MAYBE = re.compile(_PREFIX + r"(yes|maybe)\b", re.IGNORECASE)
_LEADING_NO = re.compile(
    _PREFIX + r"(no)(?:\s*[.,;:!)\-\u2013\u2014*_\"'`]|\s*$|\s+(?:it|they|this|that|we|there\s+(?:is|was|are|were)\s+not)\b)",
    re.IGNORECASE,
)
_YES_AND_NO = re.compile(_PREFIX + r"yes\s+and\s+no\b", re.IGNORECASE)
# "Based on the context, yes ..." / "In conclusion, no."
_AFTER_LEAD_IN = re.compile(
    r"^[\s*_]*(?:based\s+on|according\s+to|in\s+conclusion|in\s+summary|to\s+summarize|overall|in\s+short)"
    r"[^.,;:]{0,80}[,:]\s*[*_\"'`]*(yes|no|maybe)\b(?!\s+(?:evidence|study|studies|data|significant|difference))",
    re.IGNORECASE,
)
# An explicit verdict anywhere: "the answer is no", "final decision: maybe", "answer to this question is yes".
_EXPLICIT = re.compile(
    r"\b(?:(?:short|final|simple)\s+)?(?:answer|decision|verdict)(?:\s+to\s+(?:the|this|your)\s+question)?"
    r"\s*(?:(?:is|would\s+be)\s*[:\-]?|[:\-])\s*[*_\"'`]*\s*(yes|no|maybe)\b",
    re.IGNORECASE,
)
# Hedges that open an answer and mean "maybe" when no explicit verdict is given.
_HEDGE = re.compile(
    r"^[\s*_]*(?:it\s+(?:is|remains)\s+(?:unclear|uncertain|not\s+clear|inconclusive|possible)"
    r"|(?:the\s+)?(?:evidence|data|results?)\s+(?:is|are|remains?)\s+(?:inconclusive|mixed|conflicting|unclear)"
    r"|possibly|perhaps|not\s+necessarily|unclear|uncertain|inconclusive)\b",
    re.IGNORECASE,
)


def extract_decision(text: str | None) -> str | None:
    """The yes/no/maybe verdict an answer commits to, or None when it gives none.

    Only clear signals count: a leading verdict word, one after a lead-in ("Based on the context, yes"), an
    explicit "the answer is ..." anywhere, or an opening hedge ("It is unclear whether ...") for maybe. Phrases
    such as "there is no evidence" or "no significant difference" are not a verdict on their own.
    """
    if not text:
        return None
    if _YES_AND_NO.search(text):
        return "maybe"
    for pattern in (_LEADING_YES_MAYBE, _LEADING_NO, _AFTER_LEAD_IN, _EXPLICIT):
        match = pattern.search(text)
        if match:
            return match.group(1).lower()
    if _HEDGE.search(text):
        return "maybe"
    return None


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def _normalize_tokens(text: str) -> list[str]:
    """SQuAD answer normalization: lower case, no punctuation, no articles, single spaces."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()


def token_f1(pred: str, ref: str) -> float:
    """SQuAD token-overlap F1 between a prediction and a reference (1.0 when both are empty)."""
    pred_tokens, ref_tokens = _normalize_tokens(pred or ""), _normalize_tokens(ref or "")
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    overlap = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge_l_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure (Porter-stemmed longest common subsequence) of a prediction against a reference."""
    if not (pred or "").strip() or not (ref or "").strip():
        return float(not (pred or "").strip() and not (ref or "").strip())
    return float(_rouge_l_scorer().score(ref, pred)["rougeL"].fmeasure)


_CITATION_GROUP = re.compile(r"\[\s*(\d+(?:\s*(?:[,;]|-|\u2013)\s*\d+)*)\s*\]")
_MAX_RANGE = 100  # "[1-100000]" is a typo, not a hundred thousand citations


def parse_citations(text: str | None) -> list[int]:
    """Cited document indices in order of first appearance, without repeats: "[0]", "[1, 2]", "[3][4]", "[1-3]"."""
    cited: dict[int, None] = {}
    for group in _CITATION_GROUP.finditer(text or ""):
        for part in re.split(r"\s*[,;]\s*", group.group(1)):
            bounds = re.split(r"\s*[-\u2013]\s*", part)
            if len(bounds) == 2 and int(bounds[0]) <= int(bounds[1]) <= int(bounds[0]) + _MAX_RANGE:
                for index in range(int(bounds[0]), int(bounds[1]) + 1):
                    cited[index] = None
            elif len(bounds) == 1:
                cited[int(bounds[0])] = None
    return list(cited)


class CitationValidity(NamedTuple):
    valid_fraction: float  # share of cited indices that name a document in the prompt (0.0 without citations)
    has_citation: bool
    n_cited: int


def citation_validity(text: str | None, n_docs: int) -> CitationValidity:
    """How many of an answer's citations point at one of the ``n_docs`` documents of its prompt."""
    cited = parse_citations(text)
    if not cited:
        return CitationValidity(0.0, False, 0)
    valid = sum(0 <= index < n_docs for index in cited)
    return CitationValidity(valid / len(cited), True, len(cited))


def own_doc_cited(text: str | None, doc_ids: Sequence[str], gold_doc_id: str | None) -> bool:
    """Whether the answer cites the document the question was written from (its position in ``doc_ids``)."""
    if gold_doc_id is None:
        return False
    return any(0 <= index < len(doc_ids) and doc_ids[index] == gold_doc_id for index in parse_citations(text))


def citation_overlap(text: str | None, reference: str | None) -> float:
    """Jaccard overlap of the document indices two answers cite (1.0 when neither cites anything)."""
    cited, ref_cited = set(parse_citations(text)), set(parse_citations(reference))
    if not cited and not ref_cited:
        return 1.0
    return len(cited & ref_cited) / len(cited | ref_cited)
