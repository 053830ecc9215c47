"""Choosing the stored threshold from validation scores: a target share of teacher calls, or a target PGR."""

from __future__ import annotations

import numpy as np

from ragroute.errors import UserError
from router.metrics import routing_curve


def threshold_for_share(scores: np.ndarray, share: float) -> float:
    """The threshold whose teacher share on ``scores`` is closest to ``share`` (ties go to the smaller share)."""
    scores = np.asarray(scores, dtype=float)
    zeros = np.zeros(len(scores))
    curve = routing_curve(scores, zeros, zeros)
    j = int(np.argmin(np.abs(curve.share - share) + 1e-12 * curve.share))
    return float(curve.threshold[j])


def threshold_for_pgr(scores: np.ndarray, student_quality: np.ndarray, teacher_quality: np.ndarray, target: float) -> float:
    """The threshold of the smallest teacher share whose PGR on the validation scores reaches ``target``."""
    curve = routing_curve(scores, student_quality, teacher_quality)
    if np.isnan(curve.pgr).any():
        raise UserError(
            "a PGR target needs a teacher that is better than the student on the labelling metric; here it is "
            f"not (student {curve.quality[0]:.3f}, teacher {curve.quality[-1]:.3f}); use threshold_rule=teacher_share"
        )
    j = int(np.flatnonzero(curve.pgr >= target - 1e-12)[0])
    return float(curve.threshold[j])


def choose_threshold(
    rule: str, target: float, scores: np.ndarray, student_quality: np.ndarray, teacher_quality: np.ndarray
) -> float:
    if rule == "teacher_share":
        return threshold_for_share(scores, target)
    if rule == "pgr":
        return threshold_for_pgr(scores, student_quality, teacher_quality, target)
    raise ValueError(f"unknown threshold rule '{rule}'")
