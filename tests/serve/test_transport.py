"""Hostile clients below the JSON layer, against a real server on 127.0.0.1 (serve.transport, serve.guard): clients
that stop reading, oversized or endless request heads, slow-loris connections, too many connections or streams.
Each hostile case is followed by a valid request that is answered normally. The student is a real upstream that
streams as fast as it is read (or hangs), the teacher the echo upstream."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from serve.config import HttpConfig, LimitsConfig

HTTP = HttpConfig(max_header_bytes=8192, max_headers=50, header_timeout_s=1.0, write_timeout_s=1.0,
                  max_connections=40)


def connect(url: str, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connecting, so the advertised window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    return sock


def stream_request(content: str = "Tell me everything.", model: str = "student") -> bytes:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 512,
                       "stream": True}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode() + body)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and everything until the server closes the connection."""
    data = b""
    try:
        while part := sock.recv(65536):
            data += part
    except (ConnectionResetError, TimeoutError):
        pass
    return (int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1") else 0), data


def wait_for(condition, timeout_s: float = 30.0, what: str = "condition") -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"{what} not reached within {timeout_s}s"
        time.sleep(0.05)
    return time.monotonic() - started


def assert_answers_normally(url: str) -> None:
    response = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
        "model": "teacher", "messages": [{"role": "user", "content": "What is insulin?"}]})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "What is insulin?"


@pytest.fixture
def server(faulty_upstream, echo_upstream, upstream, base_cfg, start_server):
    def start(student: str = "flood", http: HttpConfig = HTTP, **limits) -> tuple[str, object]:
        student_upstream = faulty_upstream(student)
        student = upstream(student_upstream.base_url, name="student-up", served_model_name="student-upstream")
        cfg = base_cfg(student, upstream(echo_upstream, name="echo"),
                       http=http, limits=LimitsConfig(**{"max_concurrent": 1, **limits}))
        return start_server(cfg), student_upstream

    return start


def test_client_that_stops_reading_is_cut_off_and_its_generation_stopped(server, metric):
    """Tiny receive window, two pipelined streams, never a recv: the write deadline cuts it off, the upstream
    generation is closed, and the only generation slot (max_concurrent 1) is free for the next request."""
    url, flood = server()
    sock = connect(url, rcvbuf=4096)
    sock.sendall(stream_request() + stream_request())
    seconds = wait_for(lambda: metric(url, "ragroute_cancelled_total", model="student", reason="slow_reader") == 1,
                       what="slow reader cut off")
    assert seconds < 1.0 + 30  # the write deadline (1 s) after the kernel's and the transport's buffers filled
    assert flood.closed.wait(10), "the upstream generation kept running"
    assert_answers_normally(url)
    assert metric(url, "ragroute_in_flight_requests") == 0
    with pytest.raises(OSError):  # the connection was aborted, the pipelined second request never ran
        for _ in range(100):
            sock.sendall(b"x" * 65536)
    sock.close()
    assert metric(url, "ragroute_cancelled_total", model="student", reason="slow_reader") == 1


def test_per_client_cap_on_concurrent_requests(server, metric):
    url, _ = server("hang", max_concurrent=4, max_concurrent_per_client=2)
    socks = [connect(url) for _ in range(2)]
    for sock in socks:
        sock.sendall(stream_request())
    wait_for(lambda: metric(url, "ragroute_in_flight_requests") == 2, what="two streams in flight")
    refused = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                         json={"model": "teacher", "messages": [{"role": "user", "content": "Hi?"}]})
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "too_many_client_requests" and refused.headers["retry-after"] == "1"
    assert httpx.get(f"{url}/health").status_code == 200  # probes are not capped
    for sock in socks:
        sock.close()
    wait_for(lambda: metric(url, "ragroute_in_flight_requests") == 0, what="streams released")
    assert_answers_normally(url)


@pytest.mark.parametrize(("headers", "code"), [
    ({"x-big": "a" * 100_000}, "header_too_large"),
    ({f"x-h{i}": "1" for i in range(200)}, "too_many_headers"),
])
def test_oversized_request_head_gets_431_before_auth(server, headers, code):
    url, _ = server()
    response = httpx.get(f"{url}/health", headers=headers, timeout=30)
    assert response.status_code == 431, response.text
    assert response.json()["error"]["code"] == code
    assert_answers_normally(url)


def test_endless_header_is_cut_at_the_limit(server):
    url, _ = server()
    sock = connect(url)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nx-endless: ")
    sent = 0
    try:
        for _ in range(1024):  # up to 64 MB, never a line end
            sock.sendall(b"a" * 65536)
            sent += 65536
    except OSError:  # the server answered 431 and closed
        pass
    status, raw = read_response(sock)
    sock.close()
    assert status == 431 or sent < 16 * 2**20, raw[:200]  # refused long before 64 MB (a reset may hide the 431)
    assert_answers_normally(url)


def test_slow_loris_and_idle_connections_are_closed_with_408(server):
    url, _ = server()
    idle, trickling = connect(url), connect(url)
    trickling.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n")
    started = time.monotonic()
    stop = threading.Event()

    def trickle() -> None:
        try:
            while not stop.wait(0.2):
                trickling.sendall(b"x-a: b\r\n")
        except OSError:
            pass

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    results = [read_response(sock) for sock in (idle, trickling)]
    elapsed = time.monotonic() - started
    stop.set()
    thread.join()
    for sock in (idle, trickling):
        sock.close()
    assert [status for status, _ in results] == [408, 408], results
    assert b'"header_timeout"' in results[1][1]
    assert elapsed < 1.0 + 5
    assert_answers_normally(url)


def test_connections_beyond_the_cap_get_503(server):
    url, _ = server(http=HttpConfig(max_connections=5, header_timeout_s=30))
    idle = [connect(url) for _ in range(5)]
    time.sleep(0.2)  # accepted by the server
    try:
        assert httpx.get(f"{url}/health", timeout=30).status_code == 503
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200
    assert_answers_normally(url)
