"""The abuse run of issue 16 as regression tests, against real in-process models (the tiny Llama, whose context
is 2,048 tokens) behind a real server with auth on: every abusive request is refused at once with a 4xx JSON
naming the field and the limit, is never counted as a model failure or fallback, and the valid request sent
after it is answered normally."""

from __future__ import annotations

import json
import logging
import re
import time

import httpx
import pytest

from ragroute.engines.base import EngineConfig, SamplingConfig
from serve.config import AuthConfig, HealthConfig, ServeConfig

KEY = "abuse-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}
EMOJI_SYSTEM_PROMPT = "\N{GRINNING FACE}" * 3500  # 3,500 characters, ~10,500 tokens


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    from serve.app import create_app
    from serve.config import BackendConfig
    from serve.server import server_in_thread

    pipeline = tmp_path_factory.mktemp("pipe") / "pipeline.yaml"
    pipeline.write_text(f"corpus: demo\nretriever: bm25\nreranker: none\nretrieval_n: 3\nfinal_n: 2\n"
                        f"index_dir: {pipeline.parent / 'idx'}\n")

    def tiny(name: str) -> BackendConfig:
        return BackendConfig(model=str(tiny_model_dir), name=name, dtype="float32",
                             engine=EngineConfig.of("transformers", device="cpu"))

    cfg = ServeConfig(student=tiny("tiny-student"), teacher=tiny("tiny-teacher"), pipeline=str(pipeline),
                      sampling=SamplingConfig(temperature=1.0), auth=AuthConfig(api_key=KEY),
                      health=HealthConfig(probe_interval_s=0.5))
    with server_in_thread(create_app(cfg)) as url:
        deadline = time.monotonic() + 300
        while httpx.get(f"{url}/ready").status_code != 200:
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.1)
        yield url


def post(url: str, path: str, body: dict | bytes, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}{path}", content=content, timeout=120,
                      headers={**AUTH, "content-type": "application/json", **headers})


def chat(content: str, **extra) -> dict:
    return {"model": "student", "messages": [{"role": "user", "content": content}], "max_tokens": 2, **extra}


def metric(url: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def assert_answers_normally(url: str) -> None:
    response = post(url, "/v1/chat/completions", chat("What is insulin?"))
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] >= 1


def assert_refused(response: httpx.Response, status: int, param: str | None, *needles: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    for needle in needles:
        assert needle in error["message"], error


@pytest.fixture
def no_failures_counted(server):
    """The abusive request must not count as a model failure, a fallback or a cancelled generation."""
    before = [metric(server, name) for name in ("ragroute_errors_total", "ragroute_fallbacks_total")]
    yield
    assert [metric(server, name) for name in ("ragroute_errors_total", "ragroute_fallbacks_total")] == before
    assert_answers_normally(server)


def test_ten_thousand_stop_strings(server, no_failures_counted):
    response = post(server, "/v1/chat/completions", chat("Hi?", stop=[f"s{i}" for i in range(10_000)]))
    assert_refused(response, 400, "stop", "10000 strings; the limit is 4")


def test_overlong_stop_string(server, no_failures_counted):
    assert_refused(post(server, "/v1/chat/completions", chat("Hi?", stop="x" * 101)), 400, "stop",
                   "101 characters; the limit is 100")


def test_emoji_system_prompt_over_the_context(server, no_failures_counted):
    body = {"model": "router", "messages": [{"role": "system", "content": EMOJI_SYSTEM_PROMPT},
                                            {"role": "user", "content": "Hi?"}]}
    response = post(server, "/v1/chat/completions", body)
    assert_refused(response, 400, "messages", "context is 2048 tokens")
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_max_tokens_over_what_the_prompt_leaves(server, no_failures_counted):
    body = {"model": "teacher", "max_tokens": 500,
            "messages": [{"role": "system", "content": "note " * 1900}, {"role": "user", "content": "Hi?"}]}
    assert_refused(post(server, "/v1/chat/completions", body), 400, "max_tokens", "'max_tokens' is 500",
                   "2048-token context")


@pytest.mark.parametrize("path", ["/v1/answer", "/v1/chat/completions"])
def test_lone_surrogate(server, no_failures_counted, path):
    raw = (b'{"question": "\\ud800"}' if path == "/v1/answer"
           else b'{"model": "student", "messages": [{"role": "user", "content": "\\ud800"}]}')
    response = post(server, path, raw)
    assert response.status_code == 400, response.text
    assert "lone surrogate" in response.json()["error"]["message"]


def test_seed_beyond_64_bits(server, no_failures_counted):
    response = post(server, "/v1/chat/completions", chat("Hi?", seed=2**70))
    assert response.status_code == 400 and response.json()["error"]["param"] == "seed", response.text


def test_form_content_type_gets_a_hint(server, no_failures_counted):
    response = post(server, "/v1/answer", b'{"question": "Do statins lower LDL?"}',
                    **{"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400 and "Content-Type: application/json" in response.json()["error"]["message"]


@pytest.mark.parametrize(("auth", "status"), [(f"Bearer {KEY}", 413), ("Bearer wrong", 401)])
def test_endless_chunked_body(server, no_failures_counted, raw_http, auth, status):
    sock = raw_http.open(server, "/v1/chat/completions", {"authorization": auth, "content-type": "application/json",
                                                           "transfer-encoding": "chunked"})
    try:
        for _ in range(20):  # 20 x 64 KB, past the 1 MB limit, and never a last chunk
            sock.sendall(b"10000\r\n" + b"x" * 65536 + b"\r\n")
    except OSError:  # the server answered and closed before we finished: fine
        pass
    code, raw = raw_http.read(sock)
    sock.close()
    assert code == status, raw


def test_abandoned_plain_request_stops_generating(server, raw_http, caplog):
    """A non-streaming request whose client leaves: the generation stops instead of running to max_tokens."""
    body = json.dumps(chat("Tell me everything.", max_tokens=1000)).encode()
    cancelled = metric(server, "ragroute_cancelled_total", model="student")
    with caplog.at_level(logging.INFO, logger="ragroute"):
        sock = raw_http.open(server, "/v1/chat/completions", {**AUTH, "content-type": "application/json",
                                                              "content-length": str(len(body))}, body)
        deadline = time.monotonic() + 60
        while metric(server, "ragroute_in_flight_requests") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        sock.close()
        while metric(server, "ragroute_cancelled_total", model="student") == cancelled:
            assert time.monotonic() < deadline, "the request was not cancelled"
            time.sleep(0.05)
        assert_answers_normally(server)  # the single worker thread is free again
    stopped = [r.getMessage() for r in caplog.records if "generation cancelled" in r.getMessage()]
    assert stopped and int(re.search(r"after (\d+) of 1000 tokens", stopped[-1])[1]) < 1000, stopped
    assert metric(server, "ragroute_errors_total") == 0 and metric(server, "ragroute_fallbacks_total") == 0


def test_abandoned_stream_stops_generating(server, caplog):
    cancelled = metric(server, "ragroute_cancelled_total", model="student")
    with caplog.at_level(logging.INFO, logger="ragroute"):
        with httpx.stream("POST", f"{server}/v1/chat/completions", headers=AUTH, timeout=60,
                          json=chat("Tell me everything.", max_tokens=1000, min_tokens=1000, stream=True)) as response:
            for line in response.iter_lines():
                # Chunks are compact JSON (pydantic): parse them rather than match their spacing.
                if line.startswith("data: {") and any(
                        (choice.get("delta") or {}).get("content") for choice in json.loads(line[6:])["choices"]):
                    break  # one token arrived; leave
        # The server notices the departure at its next send: wait for that (not a fixed sleep), then the model
        # must be free for the next request.
        deadline = time.monotonic() + 60
        while metric(server, "ragroute_cancelled_total", model="student") == cancelled:
            assert time.monotonic() < deadline, "the stream was not cancelled"
            time.sleep(0.05)
        assert_answers_normally(server)
    stopped = [r.getMessage() for r in caplog.records if "generation cancelled" in r.getMessage()]
    assert stopped and int(re.search(r"after (\d+) of 1000 tokens", stopped[-1])[1]) < 1000, stopped
    assert metric(server, "ragroute_cancelled_total", model="student") == cancelled + 1


@pytest.mark.parametrize(("field", "value"), [
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("tool_choice", "required"),
    ("response_format", {"type": "json_object"}),
    ("logprobs", True),
    ("top_logprobs", 10**6),
    ("frequency_penalty", 0.5),
    ("logit_bias", {"100": 5}),
    ("colour", "red"),  # not OpenAI's either: still refused, never silently ignored
])
def test_unsupported_openai_field_is_named(server, no_failures_counted, field, value):
    response = post(server, "/v1/chat/completions", chat("Hi?", **{field: value}))
    assert_refused(response, 400, field, f"'{field}' is not supported", "supported fields: ", "max_tokens")
    assert response.json()["error"]["code"] == "unsupported_parameter"


def test_fields_that_ask_for_nothing_are_accepted(server):
    """SDKs send defaults (logprobs false, penalties 0, no tools) and bookkeeping (user): answered normally."""
    response = post(server, "/v1/chat/completions", chat("What is insulin?", logprobs=False, frequency_penalty=0,
                                                         presence_penalty=0, tools=[], user="u-1"))
    assert response.status_code == 200, response.text


def test_trailing_slash_never_redirects_to_the_host_header(server, no_failures_counted):
    response = post(server, "/v1/answer/", {"question": "Do statins lower LDL?"}, host="evil.example")
    assert response.status_code == 404 and "location" not in response.headers, response.headers
    assert response.json()["error"]["message"] == "no such endpoint: /v1/answer/"
