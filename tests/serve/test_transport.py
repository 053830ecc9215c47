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


class Trickler:
    """``n`` slow-loris connections, each sending one more header line every ``every_s`` seconds."""

    def __init__(self, url: str, n: int, every_s: float = 0.5) -> None:
        self.socks = [connect(url) for _ in range(n)]
        for sock in self.socks:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self.thread.start()

    def _run(self, every_s: float) -> None:
        while not self.stop.wait(every_s):
            for sock in self.socks:
                try:
                    sock.sendall(b"x-slow: 1\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.socks:
            sock.close()


def non_readers(url: str, n: int) -> list[socket.socket]:
    socks = [connect(url, rcvbuf=4096) for _ in range(n)]
    for sock in socks:
        sock.sendall(stream_request() + stream_request())  # two pipelined streams each, never read
    return socks


@pytest.fixture
def slow_echo_upstream():
    """The echo upstream answering after 1 s: a request that is in flight when SIGTERM arrives."""
    from serve.echo_upstream import create_echo_app
    from serve.server import server_in_thread

    with server_in_thread(create_echo_app(delay_s=1.0)) as url:
        yield f"{url}/v1"


def test_sigterm_during_hostile_clients_answers_then_exits_0_within_its_deadline(faulty_upstream, slow_echo_upstream,
                                                                                  tmp_path, metric, free_port):
    """The issue's "done when", on a real `ragroute serve` process: 4 non-reading clients fill all 4 generation
    slots and 100 connections trickle headers; a valid request is still answered (once the write deadline cuts
    the non-readers off); then, with 3 new non-readers, the 100 trickling connections and a valid request in
    flight, SIGTERM: new connections are refused at once, the valid request is answered, and the process exits 0
    within its shutdown deadline."""
    import os
    import signal
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from ragroute.config import REPO_ROOT

    echo_upstream = slow_echo_upstream
    flood = faulty_upstream("flood")
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(
        f"rag: false\nstudent:\n  name: student-up\n  engine: {{name: openai, base_url: '{flood.base_url}', "
        f"served_model_name: student-upstream, max_retries: 0}}\nteacher:\n  name: echo\n  engine: {{name: openai, "
        f"base_url: '{echo_upstream}', max_retries: 0}}\nrouting: {{if_missing: teacher}}\n"
        f"health: {{probe_interval_s: 0}}\nlimits: {{max_concurrent: 4}}\n"
        f"http: {{write_timeout_s: 5, header_timeout_s: 60, shutdown_timeout_s: 2}}\n")
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "ragroute.cli", "serve", "--config", str(config), "--port",
                             str(port)], cwd=REPO_ROOT, env={**os.environ, "RAGROUTE_API_KEY": ""}, stdout=log,
                            stderr=subprocess.STDOUT)
    url, hostile, trickler = f"http://127.0.0.1:{port}", [], None
    try:
        wait_for(lambda: _ready(url, proc), 120, "server ready")
        hostile = non_readers(url, 4)
        trickler = Trickler(url, 100)
        wait_for(lambda: metric(url, "ragroute_in_flight_requests") == 4, what="4 non-readers generating")
        started = time.monotonic()
        assert_answers_normally(url)
        answered_s = time.monotonic() - started
        assert metric(url, "ragroute_cancelled_total", model="student", reason="slow_reader") == 4
        hostile += non_readers(url, 3)  # and one slot left for the valid request
        wait_for(lambda: metric(url, "ragroute_in_flight_requests") == 3, what="3 new non-readers generating")
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(assert_answers_normally, url)  # 1 s at the upstream
            wait_for(lambda: metric(url, "ragroute_in_flight_requests") == 4, what="the valid request in flight")
            stopping = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            with pytest.raises(ConnectionRefusedError):
                connect(url)
            in_flight.result(timeout=30)  # finished within the grace period, answered normally
        returncode = proc.wait(timeout=30)
        exit_s = time.monotonic() - stopping
    finally:
        if trickler is not None:
            trickler.close()
        for sock in hostile:
            sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.seek(0)
        output = log.read()
        log.close()
    print(f"valid request answered in {answered_s:.2f}s with 4 non-readers and 100 slow-header connections; "
          f"exit {exit_s:.2f}s after SIGTERM (shutdown_timeout_s 2)")  # the numbers in docs/DEPLOYMENT.md
    assert returncode == 0, output[-3000:]
    assert exit_s < 2 + 3, output[-3000:]  # the deadline, plus the engines' close and the interpreter's exit
    assert "Traceback" not in output, output[-5000:]


def _ready(url: str, proc) -> bool:
    assert proc.poll() is None, "ragroute serve exited"
    try:
        return httpx.get(f"{url}/ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False
