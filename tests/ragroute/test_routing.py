"""The one routing interface: the decision rule, the policies, the retrieval signals."""

from __future__ import annotations

import numpy as np

from ragroute.routing import HeuristicRouter, RoutingPolicy, fitted, heuristic, needs_teacher, teacher_only


class Fixed:
    def __init__(self, score: float) -> None:
        self.value = score
        self.seen: list = []

    def score(self, questions, signals=None):
        self.seen.append(signals)
        return np.full(len(questions), self.value)


def test_score_at_the_threshold_goes_to_the_teacher():
    assert needs_teacher(0.5, 0.5) and not needs_teacher(0.49, 0.5)
    assert needs_teacher(np.array([0.1, 0.5, 0.9]), 0.5).tolist() == [False, True, True]


def test_policies_decide_and_say_why():
    router = Fixed(0.7)
    decision = fitted(router, 0.6).decide("Does it work?", {"top_score": 1.0})
    assert (decision.use_teacher, decision.role, decision.score, decision.threshold, decision.source) == (
        True, "teacher", 0.7, 0.6, "router")
    assert router.seen == [[{"top_score": 1.0}]]
    assert fitted(router, 0.8).decide("Does it work?").role == "student"
    assert teacher_only().decide("What is insulin?").summary() == {"score": None, "threshold": None,
                                                                     "source": "teacher-only"}
    assert heuristic().decide("Which vitamin prevents scurvy?").role == "student"
    assert heuristic().decide("Is vitamin C effective against colds?").role == "teacher"
    assert RoutingPolicy.forced("student").source == "forced"
    assert HeuristicRouter().score(["What is x?", "Is x y?"]).tolist() == [0.0, 1.0]
