"""The cascade rule file: scoring, escalation, round trip, and refusing anything else."""

import json

import pytest

from ragroute.cascade import FEATURES, CascadeRule, cascade_features, load_cascade
from ragroute.errors import UserError


def test_features_describe_the_calibrated_verdict():
    x = cascade_features({"yes": 0.6, "no": 0.3, "maybe": 0.1})
    assert list(x) == list(FEATURES)
    assert x["margin"] == pytest.approx(0.3) and x["says_yes"] == 1.0 and x["says_no"] == 0.0
    shifted = cascade_features({"yes": 0.6, "no": 0.3, "maybe": 0.1}, {"yes": 0.0, "no": 2.0, "maybe": 0.0})
    assert shifted["says_no"] == 1.0


def test_uncertain_verdicts_escalate_and_the_rule_round_trips(tmp_path):
    rule = CascadeRule(weights={"margin": -8.0}, intercept=2.0, threshold=0.5)
    sure, unsure = {"yes": 0.95, "no": 0.04, "maybe": 0.01}, {"yes": 0.45, "no": 0.44, "maybe": 0.11}
    decision = rule.decide(unsure)
    assert decision.use_teacher and not rule.decide(sure).use_teacher
    assert (decision.source, decision.threshold, decision.score) == ("cascade", 0.5, pytest.approx(rule.score(unsure)))
    loaded = load_cascade(rule.save(tmp_path / "rule.json"))
    assert loaded.score(unsure) == pytest.approx(rule.score(unsure))


@pytest.mark.parametrize("content", ["not json", json.dumps({"format_version": 1, "weights": {"shoe_size": 1.0},
                                                             "intercept": 0, "threshold": 0.5})])
def test_other_files_are_user_errors(tmp_path, content):
    path = tmp_path / "rule.json"
    path.write_text(content)
    with pytest.raises(UserError, match="not a cascade rule"):
        load_cascade(path)
