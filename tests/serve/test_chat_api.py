"""OpenAI-compatible chat: routing both ways on real in-process engines, streaming, usage, the official
openai client, auth and the concurrency bound."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from ragroute.engines.base import EngineConfig
from serve.config import AuthConfig, BackendConfig, LimitsConfig

SIMPLE = "What is the normal adult resting heart rate?"
HARD = "Does intensive blood pressure control reduce stroke in elderly patients?"


@pytest.fixture(scope="module")
def two_tiny_models(tiny_model_dir, sampled):
    """Student and teacher both the tiny Llama, as two separately loaded in-process engines."""
    from serve.app import create_app
    from serve.config import ServeConfig
    from serve.server import server_in_thread

    def backend(name: str) -> BackendConfig:
        return BackendConfig(model=str(tiny_model_dir), name=name, dtype="float32", engine=EngineConfig.of("transformers", device="cpu"))

    cfg = ServeConfig(rag=False, student=backend("tiny-student"), teacher=backend("tiny-teacher"), sampling=sampled)
    with server_in_thread(create_app(cfg)) as url:
        import time

        while httpx.get(f"{url}/ready").status_code != 200:
            time.sleep(0.1)
        yield url


@pytest.mark.parametrize(("question", "role"), [(SIMPLE, "student"), (HARD, "teacher")])
def test_router_model_routes_both_ways(two_tiny_models, chat, question, role):
    response = httpx.post(f"{two_tiny_models}/v1/chat/completions", json=chat(question, max_tokens=5), timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == f"tiny-{role}"
    assert body["ragroute"]["routed_to"] == body["ragroute"]["answered_by"] == role
    assert body["ragroute"]["router"]["source"] == "heuristic"
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert 0 < usage["completion_tokens"] <= 5 and usage["prompt_tokens"] > 10
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("name", ["student", "teacher", "tiny-student", "tiny-teacher"])
def test_model_can_be_named_directly(two_tiny_models, chat, name):
    body = httpx.post(f"{two_tiny_models}/v1/chat/completions", json=chat(HARD, name, max_tokens=3), timeout=60).json()
    assert body["ragroute"]["answered_by"] == name.removeprefix("tiny-")
    assert body["ragroute"]["router"]["source"] == "forced"


def test_streaming_sends_sse_chunks_then_usage_then_done(two_tiny_models, chat):
    payload = chat(SIMPLE, max_tokens=6, stream=True, stream_options={"include_usage": True})
    with httpx.stream("POST", f"{two_tiny_models}/v1/chat/completions", json=payload, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[0]["ragroute"]["routed_to"] == "student"
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) >= 2  # text arrives in pieces, not as one final blob
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and 0 < chunks[-1]["usage"]["completion_tokens"] <= 6


def test_official_openai_client(two_tiny_models):
    client = openai.OpenAI(base_url=f"{two_tiny_models}/v1", api_key="unused", max_retries=0)
    assert {m.id for m in client.models.list()} >= {"router", "student", "teacher"}
    completion = client.chat.completions.create(
        model="router", messages=[{"role": "user", "content": HARD}], max_tokens=4)
    assert completion.model == "tiny-teacher"
    assert completion.choices[0].message.content
    assert completion.usage.completion_tokens > 0
    assert completion.model_extra["ragroute"]["routed_to"] == "teacher"
    stream = client.chat.completions.create(model="router", messages=[{"role": "user", "content": SIMPLE}],
                                            max_tokens=4, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage.completion_tokens > 0
    with pytest.raises(openai.NotFoundError, match="unknown model"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="router", messages=[{"role": "user", "content": "hi"}], max_tokens=10**6)


def test_api_key_auth(monkeypatch, start_server, base_cfg, echo_upstream, tiny_backend, chat, upstream):
    monkeypatch.setenv("SERVE_TEST_KEY", "s3cret")
    cfg = base_cfg(upstream(echo_upstream), tiny_backend(),
                   auth=AuthConfig(api_key_env="SERVE_TEST_KEY"))
    url = start_server(cfg)
    endpoint = f"{url}/v1/chat/completions"
    missing = httpx.post(endpoint, json=chat(SIMPLE))
    assert missing.status_code == 401 and "missing bearer token" in missing.json()["error"]["message"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(endpoint, json=chat(SIMPLE), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "invalid API key" in wrong.json()["error"]["message"]
    assert httpx.post(f"{url}/v1/answer", json={"question": "q?"}).status_code == 401
    ok = httpx.post(endpoint, json=chat(SIMPLE), headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    # Probes stay open for load balancers and Prometheus.
    assert [httpx.get(f"{url}{p}").status_code for p in ("/health", "/ready", "/metrics")] == [200, 200, 200]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    assert openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret").models.list().data


def test_excess_concurrent_requests_get_429(start_server, base_cfg, faulty_upstream, tiny_backend, chat, upstream):
    # The student upstream holds every request open; one slot and no queue: the second request is refused.
    hung = faulty_upstream("hang")
    student = upstream(hung.base_url, served_model_name="x", timeout_s=3.0)
    cfg = base_cfg(student, tiny_backend(), limits=LimitsConfig(max_concurrent=1, max_queue=0))
    url = start_server(cfg)
    first: dict = {}
    worker = threading.Thread(target=lambda: first.update(r=httpx.post(
        f"{url}/v1/chat/completions", json=chat(SIMPLE, "student", max_tokens=2), timeout=30)))
    worker.start()
    while hung.requests == 0:
        threading.Event().wait(0.02)
    second = httpx.post(f"{url}/v1/chat/completions", json=chat(SIMPLE, "student"), timeout=30)
    assert second.status_code == 429
    assert second.json()["error"]["type"] == "rate_limit_error" and second.headers["retry-after"]
    worker.join()
    assert first["r"].status_code == 200  # the held request still completes (timeout -> teacher)
    assert 'ragroute_rejected_total 1.0' in httpx.get(f"{url}/metrics").text
