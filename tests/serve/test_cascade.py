"""Cascade mode on /v1/answer: the student's verdict step keeps it or escalates; both visible in the response and
/metrics. Real server on 127.0.0.1, real RAG pipeline over the demo corpus, two tiny transformers models."""

from __future__ import annotations

import httpx
import pytest

from ragroute.cascade import CascadeRule
from serve.config import RoutingConfig, ServeConfig

QUESTION = "Do statins reduce LDL cholesterol and the risk of major cardiovascular events in high-risk adults?"


@pytest.fixture
def cascade_server(start_server, tiny_backend, tmp_path):
    def start(intercept: float) -> str:
        # A rule that ignores the probabilities: intercept +20 always escalates, -20 never does.
        rule = CascadeRule(weights={"margin": 0.0}, intercept=intercept, threshold=0.5).save(tmp_path / "rule.json")
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text(f"corpus: demo\nretriever: bm25\nreranker: none\nfinal_n: 2\nindex_dir: {tmp_path / 'i'}\n")
        cfg = ServeConfig(student=tiny_backend("tiny-student"), teacher=tiny_backend("tiny-teacher"),
                          pipeline=str(pipeline), routing=RoutingConfig(cascade_rule=str(rule)))
        return start_server(cfg)

    return start


@pytest.mark.parametrize("intercept, escalated", [(20.0, True), (-20.0, False)])
def test_cascade_decision_and_escalation_are_visible(cascade_server, intercept, escalated):
    url = cascade_server(intercept)
    body = httpx.post(f"{url}/v1/answer", timeout=120, json={"question": QUESTION, "options": {"max_tokens": 20}})
    assert body.status_code == 200, body.text
    body = body.json()
    cascade = body["cascade"]
    assert cascade["escalated"] is escalated and body["router"]["source"] == "cascade"
    assert body["routed_to"] == body["answered_by"] == ("teacher" if escalated else "student")
    assert body["model"] == ("tiny-teacher" if escalated else "tiny-student")
    assert set(cascade["student_verdict_probs"]) == {"yes", "no", "maybe"}
    assert abs(sum(cascade["student_verdict_probs"].values()) - 1) < 1e-6
    # The answer opens with the verdict; the student's verdict step itself is never part of a teacher answer.
    assert body["answer"].startswith(cascade["verdict"].capitalize() + ".")
    assert cascade["escalation_waste_s"] > 0 and body["timings"]["escalation_waste"] == cascade["escalation_waste_s"]
    metrics = httpx.get(f"{url}/metrics").text
    decision = "escalate" if escalated else "keep"
    assert f'ragroute_cascade_decisions_total{{decision="{decision}"}} 1.0' in metrics
    assert f"ragroute_escalation_waste_seconds_count {1.0 if escalated else 0.0}" in metrics
    # Forcing a model skips the cascade.
    forced = httpx.post(f"{url}/v1/answer", timeout=120,
                        json={"question": QUESTION, "options": {"model": "student", "max_tokens": 4}}).json()
    assert forced["cascade"] is None and forced["router"]["source"] == "forced"


def test_a_bad_rule_file_fails_startup_clearly(start_server, tiny_backend, tmp_path):
    bad = tmp_path / "rule.json"
    bad.write_text("{}")
    cfg = ServeConfig(rag=False, student=tiny_backend("s"), teacher=tiny_backend("t"),
                      routing=RoutingConfig(cascade_rule=str(bad)))
    with pytest.raises(RuntimeError, match="not a cascade rule"):
        start_server(cfg)
