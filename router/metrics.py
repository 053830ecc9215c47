"""RouteLLM's routing metrics: PGR along the teacher-call curve, APGR, CPT(x%).

Sending the questions with the highest scores to the teacher traces a curve from "all student" (share 0) to "all
teacher" (share 1). At each share the routed quality is the mean of the teacher's quality on the routed questions
and the student's on the rest; PGR (performance gap recovered) rescales it so that all-student is 0 and
all-teacher is 1. APGR is the area under PGR over the share; CPT(x%) is the smallest teacher share whose PGR
reaches x%.

Tied scores are routed together: the curve has a point at every change of score and is linear in between, which
is exactly the expected curve when ties are broken at random. A router that scores every question alike is
therefore the diagonal (APGR 0.5), the mean of random routing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RoutingCurve:
    """One point per distinct score (plus the all-student start), in order of growing teacher share."""

    share: np.ndarray  # teacher calls / questions
    threshold: np.ndarray  # route to the teacher when score >= threshold
    quality: np.ndarray  # mean routed quality
    pgr: np.ndarray  # NaN everywhere when the teacher is not better than the student overall
    mean_generation_s: np.ndarray  # mean generation latency implied by the routing (recorded timings)

    @property
    def gap(self) -> float:
        return float(self.quality[-1] - self.quality[0])


def routing_curve(
    scores: np.ndarray,
    student_quality: np.ndarray,
    teacher_quality: np.ndarray,
    student_latency: np.ndarray | None = None,
    teacher_latency: np.ndarray | None = None,
) -> RoutingCurve:
    """The curve of routing by ``scores`` (higher = teacher), with optional per-question latencies."""
    scores = np.asarray(scores, dtype=float)
    q_s, q_t = np.asarray(student_quality, dtype=float), np.asarray(teacher_quality, dtype=float)
    n = len(scores)
    if n == 0 or len(q_s) != n or len(q_t) != n:
        raise ValueError(f"need one score and two qualities per question, got {n}, {len(q_s)}, {len(q_t)}")
    lat_s = np.zeros(n) if student_latency is None else np.asarray(student_latency, dtype=float)
    lat_t = np.zeros(n) if teacher_latency is None else np.asarray(teacher_latency, dtype=float)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    gain = np.concatenate([[0.0], np.cumsum((q_t - q_s)[order])])
    extra_latency = np.concatenate([[0.0], np.cumsum((lat_t - lat_s)[order])])
    # Cut only where the score changes: the index after the last member of each group of tied scores.
    cuts = np.concatenate([[0], np.flatnonzero(np.diff(sorted_scores) != 0) + 1, [n]])
    # Threshold of a cut: midway to the next lower score, so small float differences do not flip a decision.
    lower = np.concatenate([sorted_scores[cuts[1:-1]], [sorted_scores[-1]]])
    upper = sorted_scores[cuts[1:] - 1]
    thresholds = np.concatenate([[np.nextafter(sorted_scores[0], np.inf)], np.where(cuts[1:] < n, (upper + lower) / 2, lower)])
    quality = (q_s.sum() + gain[cuts]) / n
    gap = quality[-1] - quality[0]
    pgr = (quality - quality[0]) / gap if gap > 1e-12 else np.full(len(cuts), np.nan)
    return RoutingCurve(
        share=cuts / n,
        threshold=thresholds,
        quality=quality,
        pgr=pgr,
        mean_generation_s=(lat_s.sum() + extra_latency[cuts]) / n,
    )


def apgr(curve: RoutingCurve) -> float | None:
    """Area under PGR over teacher share 0..1 (trapezoids are exact: the curve is linear between points)."""
    if np.isnan(curve.pgr).any():
        return None
    return float(np.trapezoid(curve.pgr, curve.share))


def cpt(curve: RoutingCurve, target: float) -> float | None:
    """Call-performance threshold: the smallest teacher share whose PGR reaches ``target`` (e.g. 0.5)."""
    if np.isnan(curve.pgr).any():
        return None
    reached = np.flatnonzero(curve.pgr >= target - 1e-12)
    if len(reached) == 0:
        return None
    j = int(reached[0])
    if j == 0:
        return 0.0
    p0, p1 = curve.pgr[j - 1], curve.pgr[j]
    s0, s1 = curve.share[j - 1], curve.share[j]
    return float(s0 + (target - p0) / (p1 - p0) * (s1 - s0))


def interpolate(curve: RoutingCurve, share: float) -> dict[str, float | None]:
    """Quality, PGR and latency of the curve at a teacher share (linear between points)."""
    pgr = None if np.isnan(curve.pgr).any() else float(np.interp(share, curve.share, curve.pgr))
    return {
        "teacher_share": float(share),
        "quality": float(np.interp(share, curve.share, curve.quality)),
        "pgr": pgr,
        "mean_generation_s": float(np.interp(share, curve.share, curve.mean_generation_s)),
    }
