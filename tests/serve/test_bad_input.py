"""Every client mistake gets a 4xx with a JSON error naming the problem, never a 500."""

from __future__ import annotations

import httpx
import pytest

from ragroute.engines.base import EngineConfig, SamplingConfig
from serve.config import BackendConfig, LimitsConfig

LIMITS = LimitsConfig(max_question_chars=200, max_messages=4, max_prompt_chars=1000, max_body_bytes=20_000,
                      max_tokens_limit=64)
USER = [{"role": "user", "content": "Is aspirin useful?"}]

# (endpoint, raw body or JSON, expected status, words the error message must contain)
CASES = [
    ("/v1/answer", b"{not json", 400, "not valid JSON"),
    ("/v1/answer", b"", 400, "required"),
    ("/v1/answer", [1, 2], 400, "invalid request"),
    ("/v1/answer", {}, 400, "'question' is required"),
    ("/v1/answer", {"question": 123}, 400, "'question'"),
    ("/v1/answer", {"question": None}, 400, "'question'"),
    ("/v1/answer", {"question": ""}, 400, "question is empty"),
    ("/v1/answer", {"question": "   \n "}, 400, "question is empty"),
    ("/v1/answer", {"question": "why? " * 50}, 400, "the limit is 200"),
    ("/v1/answer", {"question": "q?", "options": "fast"}, 400, "'options'"),
    ("/v1/answer", {"question": "q?", "options": {"max_tokens": "ten"}}, 400, "'options.max_tokens'"),
    ("/v1/answer", {"question": "q?", "options": {"max_tokens": 0}}, 400, "'options.max_tokens'"),
    ("/v1/answer", {"question": "q?", "options": {"max_tokens": 65}}, 400, "'options.max_tokens' is 65; the limit is 64"),
    ("/v1/answer", {"question": "q?", "options": {"model": "gpt-5"}}, 400, "'options.model'"),
    ("/v1/answer", {"question": "q?", "options": {"temperature": -1}}, 400, "'options.temperature'"),
    ("/v1/answer", {"question": "q?", "options": {"fallback": "yes"}}, 400, "'options.fallback'"),
    ("/v1/answer", {"question": "q?", "colour": "red"}, 400, "'colour' is not a known field"),
    ("/v1/answer", {"question": "x" * 30_000}, 413, "the limit is 20000"),
    ("/v1/chat/completions", b"{", 400, "not valid JSON"),
    ("/v1/chat/completions", {"messages": USER}, 400, "'model' is required"),
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": USER}, 404, "unknown model 'gpt-4o'"),
    ("/v1/chat/completions", {"model": 7, "messages": USER}, 400, "'model'"),
    ("/v1/chat/completions", {"model": "router"}, 400, "'messages' is required"),
    ("/v1/chat/completions", {"model": "router", "messages": []}, 400, "'messages'"),
    ("/v1/chat/completions", {"model": "router", "messages": "hi"}, 400, "'messages'"),
    ("/v1/chat/completions", {"model": "router", "messages": [{"role": "wizard", "content": "hi"}]}, 400,
     "'messages.0.role'"),
    ("/v1/chat/completions", {"model": "router", "messages": [{"role": "user", "content": 5}]}, 400,
     "'messages.0.content'"),
    ("/v1/chat/completions", {"model": "router", "messages": [{"role": "user"}]}, 400, "'messages.0.content' is required"),
    ("/v1/chat/completions", {"model": "router", "messages": [{"role": "system", "content": "be brief"}]}, 400,
     "at least one user message"),
    ("/v1/chat/completions", {"model": "router", "messages": [{"role": "user", "content": " "}]}, 400, "is empty"),
    ("/v1/chat/completions", {"model": "router", "messages": [{"role": "user", "content": "q" * 201}]}, 400,
     "the limit is 200"),
    ("/v1/chat/completions", {"model": "router", "messages": USER * 5}, 400, "5 messages; the limit is 4"),
    ("/v1/chat/completions", {"model": "router", "messages": [{"role": "system", "content": "c" * 1001}, *USER]}, 400,
     "the limit is 1000"),
    ("/v1/chat/completions", {"model": "router", "messages": USER, "stream": "yes"}, 400, "'stream'"),
    ("/v1/chat/completions", {"model": "router", "messages": USER, "n": 2}, 400, "'n'"),
    ("/v1/chat/completions", {"model": "router", "messages": USER, "temperature": 3}, 400, "'temperature'"),
    ("/v1/chat/completions", {"model": "router", "messages": USER, "max_tokens": 1000}, 400, "the limit is 64"),
    ("/v1/chat/completions", {"model": "router", "messages": USER, "max_tokens": -1}, 400, "'max_tokens'"),
    ("/v1/chat/completions", {"model": "router", "messages": USER, "stop": 5}, 400, "'stop'"),
]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory, echo_upstream, upstream):
    from serve.app import create_app
    from serve.config import ServeConfig
    from serve.server import server_in_thread

    pipeline = tmp_path_factory.mktemp("pipe") / "pipeline.yaml"
    pipeline.write_text(f"corpus: demo\nretriever: bm25\nreranker: none\nretrieval_n: 3\nfinal_n: 2\n"
                        f"index_dir: {pipeline.parent / 'idx'}\n")
    cfg = ServeConfig(student=upstream(echo_upstream),
                      teacher=BackendConfig(model=str(tiny_model_dir), dtype="float32", engine=EngineConfig.of("transformers", device="cpu")),
                      pipeline=str(pipeline), limits=LIMITS,
                      sampling=SamplingConfig(max_tokens=8))  # within LIMITS.max_tokens_limit
    with server_in_thread(create_app(cfg)) as url:
        deadline_hits = 0
        while httpx.get(f"{url}/ready").status_code != 200:
            deadline_hits += 1
            assert deadline_hits < 1200, "server never became ready"
            import time

            time.sleep(0.1)
        yield url


@pytest.mark.parametrize(("endpoint", "payload", "status", "needle"), CASES,
                         ids=[f"{i}-{c[0].rsplit('/', 1)[-1]}-{c[3][:30]}" for i, c in enumerate(CASES)])
def test_bad_input_is_a_named_4xx(server, endpoint, payload, status, needle):
    if isinstance(payload, bytes):
        response = httpx.post(f"{server}{endpoint}", content=payload, headers={"content-type": "application/json"})
    else:
        response = httpx.post(f"{server}{endpoint}", json=payload)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert needle in error["message"], error
    assert error["type"] in ("invalid_request_error",)


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/v1/answer", 405), ("POST", "/v2/answer", 404),
                                                         ("DELETE", "/v1/chat/completions", 405)])
def test_wrong_method_or_path_is_json(server, method, path, status):
    response = httpx.request(method, f"{server}{path}")
    assert response.status_code == status
    assert path in response.json()["error"]["message"]


def test_bad_inputs_leave_no_5xx_in_metrics(server):
    for endpoint, payload, _, _ in CASES[:5]:
        httpx.post(f"{server}{endpoint}", json=payload if not isinstance(payload, bytes) else None)
    from prometheus_client.parser import text_string_to_metric_families

    statuses = [
        (sample.labels["route"], sample.labels["status"])
        for family in text_string_to_metric_families(httpx.get(f"{server}/metrics").text)
        for sample in family.samples
        if sample.name == "ragroute_requests_total"
    ]
    api = [status for route, status in statuses if route.startswith("/v1/") or route == "unmatched"]
    assert api and not [s for s in api if s.startswith("5")], statuses
