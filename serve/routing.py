"""Deciding student or teacher for one question: a fitted router file, or a stated policy without one.

Every policy answers the same one-method interface (:class:`QuestionRouter`), so the service never asks which
one it has; the decision carries its score, threshold and source so responses can show why.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from ragroute.errors import UserError
from serve.config import RoutingConfig

log = logging.getLogger("ragroute.serve")


@dataclass
class RouteDecision:
    use_teacher: bool
    score: float | None  # the router's estimate that the teacher is needed
    threshold: float | None
    source: str  # "router", "heuristic", "teacher-only", "forced"


class QuestionRouter(ABC):
    source: str

    @abstractmethod
    def route(self, question: str, signals: dict[str, float] | None = None) -> RouteDecision:
        """Decide which model answers ``question`` (signals: retrieval features, where available)."""


class TeacherOnlyRouter(QuestionRouter):
    """No router file: everything goes to the teacher (safe, no savings)."""

    source = "teacher-only"

    def route(self, question: str, signals: dict[str, float] | None = None) -> RouteDecision:
        return RouteDecision(use_teacher=True, score=None, threshold=None, source=self.source)


class HeuristicRouter(QuestionRouter):
    """The seed's ``is_simple_factual`` rule as a router (short What/Which/Who/When/Where questions go to the
    student, the rest to the teacher): score 0 (student) or 1 (teacher), threshold 0.5."""

    source = "heuristic"
    threshold = 0.5

    def __init__(self) -> None:
        from router.features import is_simple_factual

        self.is_simple = is_simple_factual

    def route(self, question: str, signals: dict[str, float] | None = None) -> RouteDecision:
        score = 0.0 if self.is_simple(question) else 1.0
        return RouteDecision(use_teacher=score >= self.threshold, score=score, threshold=self.threshold, source=self.source)


class BundleRouter(QuestionRouter):
    """A router fitted by ``ragroute router fit`` (``router.persist.load_router``)."""

    source = "router"

    def __init__(self, bundle, threshold: float | None = None) -> None:
        self.bundle = bundle
        self.override = threshold
        self.threshold = float(bundle.threshold if threshold is None else threshold)

    def route(self, question: str, signals: dict[str, float] | None = None) -> RouteDecision:
        use_teacher, score = self.bundle.route(question, signals)
        score = float(score)
        if self.override is not None:
            use_teacher = score >= self.override
        return RouteDecision(use_teacher=bool(use_teacher), score=score, threshold=self.threshold, source=self.source)


def expand_path(path: str) -> Path:
    """``$RAGROUTE_HOME`` (defaulting like the rest of ragroute), other ``$VARS`` and ``~`` expanded."""
    from ragroute.models import ragroute_home

    path = path.replace("${RAGROUTE_HOME}", str(ragroute_home())).replace("$RAGROUTE_HOME", str(ragroute_home()))
    return Path(os.path.expandvars(path)).expanduser()


def load_question_router(cfg: RoutingConfig) -> QuestionRouter:
    """The router named by ``cfg.router_path``, or the ``if_missing`` policy when there is no such file."""
    if cfg.router_path:
        path = expand_path(cfg.router_path)
        if path.exists():
            from router.persist import load_router

            return BundleRouter(load_router(path, trusted=cfg.trusted_types), cfg.threshold)
        if cfg.if_missing == "error":
            raise UserError(f"router file not found: {path} (fit one with `ragroute router fit` or `ragroute demo`)")
        log.warning("router file %s not found; routing by the '%s' policy", path, cfg.if_missing)
    elif cfg.if_missing == "error":
        raise UserError("routing.router_path is not set and routing.if_missing is 'error'")
    return HeuristicRouter() if cfg.if_missing == "heuristic" else TeacherOnlyRouter()
