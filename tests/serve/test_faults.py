"""Fault injection into real upstreams: a student that errors, hangs, drops the connection, stops mid-stream or
answers blank falls back to the (real, in-process) teacher; nothing the teacher could answer fails."""

from __future__ import annotations

import json

import httpx
import pytest

from ragroute.engines.base import EngineConfig, SamplingConfig
from serve.config import BackendConfig, FallbackConfig

FAULTS = ["error", "hang", "close", "partial"]
EXPECTED_REASON = {"error": "error", "hang": "timeout", "close": "error", "partial": "error"}


def upstream_student(base_url: str) -> BackendConfig:
    return BackendConfig(name="student-up", timeout_s=1.0, engine=EngineConfig(
        name="openai", base_url=base_url, served_model_name="student-upstream", connect_timeout_s=1.0, max_retries=0))


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of the server's Prometheus text exposition (0 when the series does not exist yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


@pytest.fixture
def faulty_server(faulty_upstream, tiny_backend, base_cfg, start_server):
    def start(behaviour: str, **cfg_kwargs) -> tuple[str, object]:
        upstream = faulty_upstream(behaviour)
        cfg = base_cfg(upstream_student(upstream.base_url), tiny_backend("tiny-teacher"), sampling=SamplingConfig(temperature=1.0), **cfg_kwargs)
        return start_server(cfg), upstream

    return start


@pytest.mark.parametrize("fault", FAULTS)
def test_student_fault_falls_back_to_teacher(faulty_server, chat, fault):
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


def test_blank_student_answer_falls_back(tiny_backend, base_cfg, start_server, chat):
    # Greedy decoding makes the tiny model answer with newlines only: a real engine giving a blank answer.
    cfg = base_cfg(tiny_backend("tiny-student"), tiny_backend("tiny-teacher"))
    url = start_server(cfg)
    body = httpx.post(f"{url}/v1/chat/completions", json=chat("What is insulin?", "student", max_tokens=4),
                      timeout=30).json()
    assert body["ragroute"]["fallback"]["reason"] == "empty"
    assert body["ragroute"]["answered_by"] == "teacher"
    assert metric(url, "ragroute_fallbacks_total", reason="empty") == 1


def test_fallback_disabled_reports_failure(faulty_upstream, tiny_backend, base_cfg, start_server, chat):
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
