"""The one routing interface, shared by the router stage (fit, evaluate), eval and serve.

A :class:`Router` scores questions: the probability that the teacher is needed, higher = harder (RouteLLM's
interface). :func:`needs_teacher` is the one place a score becomes a decision (``score >= threshold``), and a
:class:`RoutingPolicy` (a router, its threshold and its name) turns one question into a :class:`RouteDecision`
that says why. Eval and serve decide through the same policy and the same retrieval signals, so a question
routed by one is routed the same way by the other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Signals = dict[str, float]

SIGNAL_NAMES = (
    "top_score",
    "margin",
    "relative_margin",
    "mean_score",
    "score_std",
    "n_docs",
    "n_above_threshold",
)


def retrieval_signals(doc_scores: Sequence[float], threshold: float = 0.5) -> Signals:
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


# The design note's "smaller model for simple questions" rule: short factual What/Which/Who/When/Where questions
# are simple; yes/no/maybe questions and long ones are not.
SIMPLE_FACTUAL = re.compile(r"^\s*(what|which|who|when|where)\b", re.IGNORECASE)
SIMPLE_MAX_WORDS = 25


def is_simple_factual(question: str) -> bool:
    """The seed's regex heuristic (``is_simple_factual``): True sends the question to the student."""
    return bool(SIMPLE_FACTUAL.match(question)) and len(question.split()) <= SIMPLE_MAX_WORDS


class Router(Protocol):
    def score(self, questions: Sequence[str], signals: Sequence[Signals | None] | None = None) -> np.ndarray:
        """P(teacher needed) per question, higher = harder."""
        ...


def needs_teacher(score: Any, threshold: float) -> Any:
    """The decision: route to the teacher when the score reaches the threshold (scalars or arrays)."""
    return score >= threshold


class HeuristicRouter:
    """The seed's regex as a router: simple factual questions score 0.0 (student), everything else 1.0."""

    threshold = 0.5

    def score(self, questions: Sequence[str], signals: Sequence[Signals | None] | None = None) -> np.ndarray:
        return np.array([0.0 if is_simple_factual(q) else 1.0 for q in questions])


@dataclass
class RouteDecision:
    use_teacher: bool
    score: float | None  # the router's estimate that the teacher is needed
    threshold: float | None
    source: str  # "router", "heuristic", "teacher-only", "forced"

    @property
    def role(self) -> str:
        return "teacher" if self.use_teacher else "student"

    def summary(self) -> dict[str, Any]:
        return {"score": self.score, "threshold": self.threshold, "source": self.source}


@dataclass
class RoutingPolicy:
    """A router with its threshold and its name; no router means everything goes to the teacher."""

    router: Router | None
    threshold: float | None
    source: str
    uses_signals: bool = False  # the router reads retrieval signals (a fitted router does, the heuristic not)

    def decide(self, question: str, signals: Signals | None = None) -> RouteDecision:
        if self.router is None or self.threshold is None:
            return RouteDecision(use_teacher=True, score=None, threshold=None, source=self.source)
        score = float(self.router.score([question], None if signals is None else [signals])[0])
        return RouteDecision(bool(needs_teacher(score, self.threshold)), score, self.threshold, self.source)

    @staticmethod
    def forced(role: str) -> RouteDecision:
        return RouteDecision(use_teacher=role == "teacher", score=None, threshold=None, source="forced")


def teacher_only() -> RoutingPolicy:
    return RoutingPolicy(None, None, "teacher-only")


def heuristic() -> RoutingPolicy:
    return RoutingPolicy(HeuristicRouter(), HeuristicRouter.threshold, "heuristic")


def fitted(router: Router, threshold: float) -> RoutingPolicy:
    """The policy of a fitted router file (it reads retrieval signals)."""
    return RoutingPolicy(router, float(threshold), "router", uses_signals=True)
