"""Fault injection into real upstreams: a student that errors, hangs, drops the connection, stops mid-stream or
answers blank falls back to the (real, in-process) teacher; nothing the teacher could answer fails."""

from __future__ import annotations

import json
import re
import threading
import time

import httpx
import pytest

from ragroute.engines.base import EngineConfig, SamplingConfig
from serve.config import BackendConfig, FallbackConfig, HealthConfig

FAULTS = ["error", "hang", "close", "partial"]
EXPECTED_REASON = {"error": "error", "hang": "timeout", "close": "error", "partial": "error"}


def upstream_student(base_url: str) -> BackendConfig:
    return BackendConfig(name="student-up", timeout_s=1.0, engine=EngineConfig.of(
        "openai", base_url=base_url, served_model_name="student-upstream", connect_timeout_s=1.0, max_retries=0))


@pytest.fixture
def faulty_server(faulty_upstream, tiny_backend, base_cfg, start_server):
    def start(behaviour: str, **cfg_kwargs) -> tuple[str, object]:
        upstream = faulty_upstream(behaviour)
        cfg = base_cfg(upstream_student(upstream.base_url), tiny_backend("tiny-teacher"), sampling=SamplingConfig(temperature=1.0), **cfg_kwargs)
        return start_server(cfg), upstream

    return start


@pytest.mark.parametrize("fault", FAULTS)
def test_student_fault_falls_back_to_teacher(faulty_server, chat, metric, fault):
    url, upstream = faulty_server(fault)
    response = httpx.post(f"{url}/v1/chat/completions", json=chat("Is aspirin useful?", "student", max_tokens=4),
                          timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert upstream.requests == 1  # the student really was asked
    assert body["ragroute"]["routed_to"] == "student"
    assert body["ragroute"]["answered_by"] == "teacher"
    assert body["model"] == "tiny-teacher"
    assert body["ragroute"]["fallback"]["reason"] == EXPECTED_REASON[fault]
    assert body["choices"][0]["message"]["content"].strip()
    assert response.headers["x-ragroute-answered-by"] == "teacher"
    assert metric(url, "ragroute_fallbacks_total", reason=EXPECTED_REASON[fault]) == 1
    assert metric(url, "ragroute_errors_total", model="student", kind=EXPECTED_REASON[fault]) == 1


@pytest.mark.parametrize("fault", ["error", "hang", "close"])
def test_streaming_fault_before_first_token_falls_back(faulty_server, chat, fault):
    url, _ = faulty_server(fault)
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30,
                      json=chat("Is aspirin useful?", "student", max_tokens=4, stream=True)) as response:
        assert response.status_code == 200
        events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["ragroute"]["answered_by"] == "teacher"
    assert chunks[0]["ragroute"]["fallback"]["reason"] == EXPECTED_REASON[fault]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.strip()
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_stream_cut_after_first_token_ends_with_error_event(faulty_server, chat):
    url, _ = faulty_server("partial")
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30,
                      json=chat("Is aspirin useful?", "student", stream=True)) as response:
        events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(e) for e in events]
    assert chunks[0]["ragroute"]["answered_by"] == "student"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if "choices" in c)
    assert streamed == "partial answer"
    assert "error" in chunks[-1] and "mid-answer" in chunks[-1]["error"]["message"]
    assert "[DONE]" not in events


def test_blank_student_answer_falls_back(tiny_backend, base_cfg, start_server, chat, metric):
    # Greedy decoding makes the tiny model answer with newlines only: a real engine giving a blank answer.
    cfg = base_cfg(tiny_backend("tiny-student"), tiny_backend("tiny-teacher"))
    url = start_server(cfg)
    body = httpx.post(f"{url}/v1/chat/completions", json=chat("What is insulin?", "student", max_tokens=4),
                      timeout=30).json()
    assert body["ragroute"]["fallback"]["reason"] == "empty"
    assert body["ragroute"]["answered_by"] == "teacher"
    assert metric(url, "ragroute_fallbacks_total", reason="empty") == 1


def test_fallback_disabled_reports_failure(faulty_upstream, tiny_backend, base_cfg, start_server, chat, metric):
    upstream = faulty_upstream("error")
    cfg = base_cfg(upstream_student(upstream.base_url), tiny_backend("tiny-teacher"),
                   fallback=FallbackConfig(enabled=False))
    url = start_server(cfg)
    response = httpx.post(f"{url}/v1/chat/completions", json=chat("Is aspirin useful?", "student"), timeout=30)
    assert response.status_code == 502
    assert "HTTP 500" in response.json()["error"]["message"]
    assert metric(url, "ragroute_fallbacks_total", reason="error") == 0


def test_hanging_teacher_gives_504_not_a_hang(faulty_upstream, tiny_backend, base_cfg, start_server, chat, upstream):
    hung = faulty_upstream("hang")
    teacher = upstream(hung.base_url, served_model_name="t", timeout_s=0.5)
    url = start_server(base_cfg(tiny_backend("tiny-student"), teacher))
    response = httpx.post(f"{url}/v1/chat/completions", json=chat("Is aspirin useful?", "teacher"), timeout=30)
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout"


def test_abandoned_request_closes_the_upstream_stream(faulty_upstream, tiny_backend, base_cfg, start_server, chat,
                                                      raw_http, metric):
    """A non-streaming request whose client leaves: the upstream connection is closed, so the upstream server
    (vLLM's `serve`) aborts the generation too."""
    upstream = faulty_upstream("trickle")
    url = start_server(base_cfg(upstream_student(upstream.base_url), tiny_backend("tiny-teacher")))
    body = json.dumps(chat("Is aspirin useful?", "student")).encode()
    sock = raw_http.open(url, "/v1/chat/completions",
                         {"content-type": "application/json", "content-length": str(len(body))}, body)
    while upstream.requests == 0:
        threading.Event().wait(0.02)
    sock.close()
    assert upstream.closed.wait(30), "the upstream kept streaming to nobody"
    assert metric(url, "ragroute_cancelled_total", model="student") == 1
    assert metric(url, "ragroute_errors_total") == 0 and metric(url, "ragroute_fallbacks_total") == 0


def test_circuit_sends_traffic_to_the_teacher_while_the_student_is_down(faulty_upstream, tiny_backend, base_cfg,
                                                                       start_server, chat, metric):
    upstream = faulty_upstream("error")  # probes (GET /models) and generations both fail
    cfg = base_cfg(upstream_student(upstream.base_url), tiny_backend("tiny-teacher"), sampling=SamplingConfig(temperature=1.0),
                   health=HealthConfig(probe_interval_s=0.1, probe_timeout_s=1.0, open_s=60))
    url = start_server(cfg)
    wait_for(lambda: httpx.get(f"{url}/health").json()["backends"]["student"]["circuit"] == "open")
    ready = httpx.get(f"{url}/ready")
    assert ready.status_code == 200 and ready.json()["backends"]["student"]["circuit"] == "open"
    assert metric(url, "ragroute_circuit_state", model="student") == 2
    response = httpx.post(f"{url}/v1/chat/completions", json=chat("Is aspirin useful?", "student", max_tokens=4),
                          timeout=60)
    assert response.status_code == 200, response.text
    info = response.json()["ragroute"]
    assert info["answered_by"] == "teacher" and info["fallback"]["reason"] == "circuit_open"
    assert upstream.requests == 0  # never asked: no timeout_s wait
    assert metric(url, "ragroute_fallbacks_total", reason="circuit_open") == 1
    assert metric(url, "ragroute_errors_total", model="student") == 0

    upstream.behaviour = "ok"  # the student recovers: the next passing probe closes its circuit
    wait_for(lambda: httpx.get(f"{url}/health").json()["backends"]["student"]["circuit"] == "closed")
    assert metric(url, "ragroute_circuit_state", model="student") == 0
    body = httpx.post(f"{url}/v1/chat/completions", json=chat("Is aspirin useful?", "student"), timeout=60).json()
    assert body["ragroute"]["answered_by"] == "student" and body["choices"][0]["message"]["content"] == "recovered"


def test_consecutive_failures_open_the_circuit(faulty_upstream, tiny_backend, base_cfg, start_server, chat):
    upstream = faulty_upstream("error")
    cfg = base_cfg(upstream_student(upstream.base_url), tiny_backend("tiny-teacher"), sampling=SamplingConfig(temperature=1.0),
                   health=HealthConfig(probe_interval_s=0, failure_threshold=2, open_s=60))
    url = start_server(cfg)
    reasons = [httpx.post(f"{url}/v1/chat/completions", json=chat("Is aspirin useful?", "student", max_tokens=2),
                          timeout=60).json()["ragroute"]["fallback"]["reason"] for _ in range(3)]
    assert reasons == ["error", "error", "circuit_open"]
    assert upstream.requests == 2


def test_ready_is_503_when_no_model_can_answer(faulty_upstream, base_cfg, start_server):
    student, teacher = faulty_upstream("error"), faulty_upstream("hang")
    cfg = base_cfg(upstream_student(student.base_url), upstream_student(teacher.base_url),
                   health=HealthConfig(probe_interval_s=0.1, probe_timeout_s=0.3, open_s=60))
    url = start_server(cfg)
    wait_for(lambda: httpx.get(f"{url}/ready").status_code == 503)
    body = httpx.get(f"{url}/ready").json()
    assert body["backends"]["teacher"]["circuit"] == "open" and "no model can answer" in body["error"]
    response = httpx.post(f"{url}/v1/chat/completions", json={"model": "teacher", "messages": [
        {"role": "user", "content": "Is aspirin useful?"}]}, timeout=30)
    assert response.status_code == 503 and response.json()["error"]["code"] == "model_down"


def wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_timed_out_in_process_generation_is_stopped(tiny_backend, base_cfg, start_server, chat, caplog):
    """The student's timeout_s passes mid-generation: its worker stops at the next token (the stopping
    criterion), so the model is free for the next request instead of finishing 1,000 dead tokens."""
    import logging

    cfg = base_cfg(tiny_backend("tiny-student", timeout_s=0.5), tiny_backend("tiny-teacher"), sampling=SamplingConfig(temperature=1.0),
                   fallback=FallbackConfig(enabled=False))
    url = start_server(cfg)
    with caplog.at_level(logging.INFO, logger="ragroute"):
        response = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                              json=chat("Tell me everything.", "student", max_tokens=1000))
        assert response.status_code == 504, response.text
        wait_for(lambda: any("generation cancelled" in r.getMessage() for r in caplog.records))
    stopped = next(r.getMessage() for r in caplog.records if "generation cancelled" in r.getMessage())
    assert "tiny-student" in stopped and int(re.search(r"after (\d+) of 1000 tokens", stopped)[1]) < 1000
    answered = httpx.post(f"{url}/v1/chat/completions", json=chat("What is insulin?", "teacher", max_tokens=2),
                          timeout=60)
    assert answered.status_code == 200
