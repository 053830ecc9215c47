"""Retrieval signals, hand-made features, the seed heuristic and the feature matrix."""

from __future__ import annotations

import pytest

from router.config import FeatureConfig
from router.features import (
    HANDCRAFTED_NAMES,
    SIGNAL_NAMES,
    feature_matrix,
    handcrafted_features,
    is_simple_factual,
    retrieval_signals,
)


def test_retrieval_signals_positive_scores() -> None:
    signals = retrieval_signals([10.0, 6.0, 5.0, 2.0])
    assert signals["top_score"] == 10.0
    assert signals["margin"] == 4.0
    assert signals["relative_margin"] == pytest.approx(0.4)
    assert signals["mean_score"] == pytest.approx(5.75)
    assert signals["n_docs"] == 4
    assert signals["n_above_threshold"] == 3  # >= 0.5 * 10
    assert set(signals) == set(SIGNAL_NAMES)


def test_retrieval_signals_unsorted_negative_and_empty() -> None:
    # Reranker logits: min-max scale; -1 -> 1.0, -2 -> 0.5, -3 -> 0.0.
    signals = retrieval_signals([-3.0, -1.0, -2.0])
    assert signals["top_score"] == -1.0 and signals["margin"] == 1.0
    assert signals["n_above_threshold"] == 2
    assert retrieval_signals([]) == dict.fromkeys(SIGNAL_NAMES, 0.0)
    assert retrieval_signals([float("nan"), 3.0])["n_docs"] == 1
    assert retrieval_signals([2.0])["margin"] == 0.0


@pytest.mark.parametrize(
    ("question", "simple"),
    [
        ("What is malaria?", True),
        ("Who discovered penicillin?", True),
        ("When did the smallpox vaccine appear?", True),
        ("Which insect spreads malaria?", True),
        ("Do statins reduce mortality?", False),
        ("Therapeutic anticoagulation in the trauma patient: is it safe?", False),
        ("What is " + "very " * 30 + "long?", False),
    ],
)
def test_seed_heuristic(question: str, simple: bool) -> None:
    assert is_simple_factual(question) is simple


def test_handcrafted_features() -> None:
    values = dict(zip(HANDCRAFTED_NAMES, handcrafted_features("Therapeutic anticoagulation in ICU: is it not safe?"), strict=True))
    assert values["n_words"] == 8
    assert values["yes_no_question"] == 1.0  # "Topic: is it ...?" counts as a yes/no question
    assert values["has_colon_title"] == 1.0
    assert values["has_negation"] == 1.0
    assert values["n_acronyms"] == 1.0
    assert values["wh_what"] == 0.0 and values["seed_simple_factual"] == 0.0
    what = dict(zip(HANDCRAFTED_NAMES, handcrafted_features("What is HbA1c in 2019?"), strict=True))
    assert what["wh_what"] == 1.0 and what["seed_simple_factual"] == 1.0 and what["n_digits"] == 5


def test_feature_matrix_fills_missing_signals_with_defaults() -> None:
    cfg = FeatureConfig()
    defaults = {name: 7.0 for name in SIGNAL_NAMES}
    matrix = feature_matrix(["Is it safe?", "Does it work?"], [{"top_score": 1.0}, None], cfg, defaults)
    n_hand = len(HANDCRAFTED_NAMES)
    assert matrix.shape == (2, 1 + n_hand + len(SIGNAL_NAMES))
    assert matrix[0, 0] == "Is it safe?"
    assert matrix[0, 1 + n_hand] == 1.0 and matrix[0, 2 + n_hand] == 7.0
    assert all(v == 7.0 for v in matrix[1, 1 + n_hand :])
    only_text = feature_matrix(["Is it safe?"], None, FeatureConfig(handcrafted=False, retrieval_signals=False))
    assert only_text.shape == (1, 1)
    with pytest.raises(ValueError):
        feature_matrix(["a?", "b?"], [None], cfg)


def test_feature_config_checks() -> None:
    with pytest.raises(ValueError, match="char_ngrams"):
        FeatureConfig(char_ngrams=[5, 2])
    with pytest.raises(ValueError, match="switched off"):
        FeatureConfig(word_ngrams=0, char_ngrams=[], handcrafted=False, retrieval_signals=False)
