"""PGR, APGR and CPT against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from router.metrics import apgr, cpt, interpolate, routing_curve

# Four questions. Gains of the teacher (q_t - q_s): 1, 0, 1, 0. Q_student = 0.25, Q_teacher = 0.75, gap 0.5.
Q_S = np.array([0.0, 1.0, 0.0, 0.0])
Q_T = np.array([1.0, 1.0, 1.0, 0.0])


def test_perfect_ranking_by_hand() -> None:
    scores = np.array([0.9, 0.2, 0.8, 0.1])  # both gains first
    curve = routing_curve(scores, Q_S, Q_T)
    assert curve.share.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve.quality.tolist() == pytest.approx([0.25, 0.5, 0.75, 0.75, 0.75])
    assert curve.pgr.tolist() == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0])
    # Trapezoids per quarter: (0 + .5)/2 * .25 + (.5 + 1)/2 * .25 + 1 * .25 + 1 * .25
    assert apgr(curve) == pytest.approx(0.0625 + 0.1875 + 0.25 + 0.25)
    assert cpt(curve, 0.5) == pytest.approx(0.25)
    assert cpt(curve, 0.8) == pytest.approx(0.25 + (0.8 - 0.5) / 0.5 * 0.25)  # 0.4


def test_worst_ranking_by_hand() -> None:
    scores = np.array([0.1, 0.9, 0.2, 0.8])  # the two zero-gain questions first
    curve = routing_curve(scores, Q_S, Q_T)
    assert curve.pgr.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0])
    assert apgr(curve) == pytest.approx(0.0625 + 0.1875)
    assert cpt(curve, 0.5) == pytest.approx(0.75)
    assert cpt(curve, 0.8) == pytest.approx(0.75 + 0.3 / 0.5 * 0.25)


def test_ties_give_the_random_expectation() -> None:
    curve = routing_curve(np.full(4, 0.5), Q_S, Q_T)
    assert curve.share.tolist() == [0.0, 1.0]
    assert apgr(curve) == pytest.approx(0.5)
    assert cpt(curve, 0.5) == pytest.approx(0.5)
    assert cpt(curve, 0.8) == pytest.approx(0.8)
    # Partial ties: the pair tied at 0.8 holds one gain -> linear through that segment.
    curve = routing_curve(np.array([0.9, 0.8, 0.8, 0.1]), Q_S, Q_T)
    assert curve.share.tolist() == [0.0, 0.25, 0.75, 1.0]
    assert curve.pgr.tolist() == pytest.approx([0.0, 0.5, 1.0, 1.0])


def test_thresholds_reproduce_the_curve_shares() -> None:
    rng = np.random.default_rng(0)
    scores = rng.choice([0.1, 0.4, 0.4, 0.7, 0.95], size=50)
    curve = routing_curve(scores, rng.random(50), rng.random(50))
    for share, threshold in zip(curve.share, curve.threshold, strict=True):
        assert np.mean(scores >= threshold) == pytest.approx(share)


def test_latency_along_the_curve() -> None:
    scores = np.array([0.9, 0.2, 0.8, 0.1])
    curve = routing_curve(scores, Q_S, Q_T, student_latency=np.ones(4), teacher_latency=np.full(4, 3.0))
    assert curve.mean_generation_s.tolist() == pytest.approx([1.0, 1.5, 2.0, 2.5, 3.0])
    assert interpolate(curve, 0.375)["mean_generation_s"] == pytest.approx(1.75)
    assert interpolate(curve, 0.375)["pgr"] == pytest.approx(0.75)


def test_pgr_undefined_without_a_gap() -> None:
    curve = routing_curve(np.array([0.3, 0.6]), np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert curve.gap == 0
    assert apgr(curve) is None and cpt(curve, 0.5) is None
    with pytest.raises(ValueError):
        routing_curve(np.array([0.1]), np.array([1.0, 0.0]), np.array([0.0, 1.0]))
