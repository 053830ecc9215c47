"""The cascade rule: after the student's verdict token, go on with the student or escalate to the teacher.

The student's verdict distribution (after its calibrated offsets, :func:`ragroute.verdict.calibrated`) becomes a
handful of features — margin, entropy, the three probabilities, which verdict won — and a logistic model fitted by
``router`` (cross-validated, :mod:`router.cascade`) turns them into P(the teacher is needed). The rule is a few
numbers in a JSON file, so serving it needs neither scikit-learn nor a pickle:
``{"weights": {...}, "intercept": b, "threshold": t, "student_bias": {...}}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ragroute.errors import UserError
from ragroute.quality import DECISIONS
from ragroute.routing import RouteDecision, needs_teacher
from ragroute.verdict import calibrated, entropy, margin

FEATURES = ("margin", "entropy", "p_yes", "p_no", "p_maybe", "says_yes", "says_no", "says_maybe")
FORMAT_VERSION = 1


def cascade_features(probs: dict[str, float], bias: dict[str, float] | None = None) -> dict[str, float]:
    """The rule's inputs from the student's raw verdict probabilities and its verdict offsets."""
    p = calibrated(probs, bias or {})
    top = max(DECISIONS, key=lambda v: p[v])
    features = {"margin": margin(p), "entropy": entropy(p)}
    features.update({f"p_{v}": p[v] for v in DECISIONS})
    features.update({f"says_{v}": float(v == top) for v in DECISIONS})
    return features


@dataclass
class CascadeRule:
    """P(teacher needed) = sigmoid(weights . features + intercept); escalate when it reaches ``threshold``."""

    weights: dict[str, float]
    intercept: float
    threshold: float
    student_bias: dict[str, float] = field(default_factory=lambda: {v: 0.0 for v in DECISIONS})
    metadata: dict = field(default_factory=dict)

    def score(self, probs: dict[str, float]) -> float:
        x = cascade_features(probs, self.student_bias)
        z = self.intercept + sum(w * x[name] for name, w in self.weights.items())
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def decide(self, probs: dict[str, float]) -> RouteDecision:
        """Keep the student or escalate, through the one score -> decision rule (:func:`needs_teacher`); the
        decision's source is ``cascade``."""
        score = self.score(probs)
        return RouteDecision(bool(needs_teacher(score, self.threshold)), score, self.threshold, "cascade")

    def save(self, path: str | Path) -> Path:
        """Write the rule's JSON atomically; its ``metadata`` carries the provenance block (versions, created)."""
        from ragroute.artifacts import write_json_atomic

        return write_json_atomic(path, {"format_version": FORMAT_VERSION, **asdict(self)})

    @classmethod
    def load(cls, path: str | Path) -> CascadeRule:
        return load_cascade(path)


def load_cascade(path: str | Path) -> CascadeRule:
    """A rule written by :meth:`CascadeRule.save` (this release or an earlier one); a clear UserError for anything
    else."""
    try:
        data = json.loads(Path(path).read_text())
        if data.pop("format_version", None) != FORMAT_VERSION:
            raise ValueError(f"format_version must be {FORMAT_VERSION}")
        unknown = set(data["weights"]) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown features {sorted(unknown)}")
        return CascadeRule(**data)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{path} is not a cascade rule file: {exc}") from None
