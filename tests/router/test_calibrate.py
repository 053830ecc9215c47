"""Threshold choice on validation scores."""

from __future__ import annotations

import numpy as np
import pytest

from ragroute.errors import UserError
from router.calibrate import threshold_for_pgr, threshold_for_share


@pytest.mark.parametrize("share", [0.0, 0.1, 0.33, 0.5, 0.8, 1.0])
def test_threshold_for_share_on_the_validation_scores(share: float) -> None:
    scores = np.random.default_rng(1).random(200)
    threshold = threshold_for_share(scores, share)
    assert np.mean(scores >= threshold) == pytest.approx(share, abs=1 / 200)


def test_threshold_for_share_generalizes_to_new_scores() -> None:
    rng = np.random.default_rng(2)
    threshold = threshold_for_share(rng.beta(2, 5, 400), 0.3)
    assert np.mean(rng.beta(2, 5, 4000) >= threshold) == pytest.approx(0.3, abs=0.05)


def test_threshold_for_share_with_ties_picks_the_nearest_reachable_share() -> None:
    scores = np.array([0.2] * 6 + [0.9] * 4)
    assert np.mean(scores >= threshold_for_share(scores, 0.35)) == pytest.approx(0.4)
    assert np.mean(scores >= threshold_for_share(scores, 0.1)) == pytest.approx(0.0)


def test_threshold_for_pgr() -> None:
    # Gains 1, 0, 1, 0 in score order 0.9, 0.8, 0.7, 0.1: PGR 0.5 after one call, 1.0 after three.
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    q_s, q_t = np.zeros(4), np.array([1.0, 0.0, 1.0, 0.0])
    assert np.mean(scores >= threshold_for_pgr(scores, q_s, q_t, 0.5)) == pytest.approx(0.25)
    assert np.mean(scores >= threshold_for_pgr(scores, q_s, q_t, 0.9)) == pytest.approx(0.75)
    with pytest.raises(UserError, match="teacher that is better"):
        threshold_for_pgr(scores, q_t, q_s, 0.5)
