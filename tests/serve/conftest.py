"""Fixtures for the serve tests: real servers on 127.0.0.1 (ragroute itself, a fake echo upstream, and raw TCP
upstreams that fail on purpose), plus backend configs for the tiny random-init Llama.

The tiny model answers every prompt greedily with newlines (a blank answer); tests that need visible text from
it sample with temperature 1.0 and a fixed seed.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from ragroute.engines.base import EngineConfig, SamplingConfig
from serve.app import create_app
from serve.config import BackendConfig, HealthConfig, ServeConfig
from serve.echo_upstream import create_echo_app
from serve.server import server_in_thread


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """``free_port()``: a TCP port free on 127.0.0.1 now (for a server started as a subprocess)."""
    return _free_port


def wait_ready(url: str, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/ready")
        if response.status_code == 200:
            return response.json()
        if response.json().get("error"):
            raise RuntimeError(f"server failed to load: {response.json()['error']}")
        time.sleep(0.1)
    raise TimeoutError("server did not become ready")


@pytest.fixture
def start_server() -> Iterator[Callable[[ServeConfig], str]]:
    """``start_server(cfg)`` runs a ragroute server until the test ends and returns its URL once ready."""
    with ExitStack() as stack:

        def start(cfg: ServeConfig) -> str:
            url = stack.enter_context(server_in_thread(create_app(cfg), http=cfg.http, limits=cfg.limits))
            wait_ready(url)
            return url

        yield start


@pytest.fixture(scope="module")
def echo_upstream() -> Iterator[str]:
    """A fake OpenAI-compatible upstream that echoes the last user message; base URL with /v1."""
    with server_in_thread(create_echo_app()) as url:
        yield f"{url}/v1"


class FaultyUpstream(socketserver.ThreadingTCPServer):
    """A raw TCP 'OpenAI server' that misbehaves in one way:

    * ``error``: answers HTTP 500 with a JSON error body;
    * ``hang``: reads the request and never answers;
    * ``close``: reads the request and closes the connection without a byte;
    * ``partial``: starts a 200 event stream, sends a few words, then drops the connection;
    * ``trickle``: streams a word every 20 ms until the client closes the connection (then sets ``closed``);
    * ``flood``: streams words as fast as the client takes them until it closes the connection (then ``closed``);
    * ``ok``: a healthy upstream (lists a model, answers "recovered"); set ``behaviour`` to switch at any time.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self.closed = threading.Event()
        self.requests = 0
        super().__init__(("127.0.0.1", 0), FaultyHandler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class FaultyHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: FaultyUpstream = self.server  # type: ignore[assignment]
        sock: socket.socket = self.request
        sock.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                return
            data += part
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:  # the whole request first: closing with unread bytes would reset the connection
            part = sock.recv(65536)
            if not part:
                return
            body += part
        if data.startswith(b"POST"):  # generations, not health probes
            server.requests += 1
        if server.behaviour == "close":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            sock.close()
        elif server.behaviour == "hang":
            server.stopping.wait()
        elif server.behaviour == "error":
            body = json.dumps({"error": {"message": "injected upstream failure", "type": "server_error"}}).encode()
            head = f"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            sock.sendall(head.encode() + body)
        elif server.behaviour == "partial":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            for word in ("partial", " answer"):
                sock.sendall(sse_event({"content": word}))
            sock.close()
        elif server.behaviour == "trickle":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            try:
                while not server.stopping.wait(0.02):
                    sock.sendall(sse_event({"content": " word"}))
            except OSError:  # the client went away: what cancellation must cause
                server.closed.set()
        elif server.behaviour == "flood":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            try:
                while not server.stopping.is_set():
                    sock.sendall(sse_event({"content": " word" * 200}) * 20)
            except OSError:
                server.closed.set()
        elif server.behaviour == "ok":
            respond_ok(sock, data)


def sse_event(delta: dict, finish: str | None = None) -> bytes:
    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "faulty",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(chunk)}\n\n".encode()


def respond_ok(sock: socket.socket, request: bytes) -> None:
    if request.startswith(b"GET"):
        body = json.dumps({"object": "list", "data": [{"id": "faulty", "object": "model"}]}).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode() + body)
        return
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                 + sse_event({"content": "recovered"}) + sse_event({}, "stop") + b"data: [DONE]\n\n")
    sock.close()


@pytest.fixture
def faulty_upstream() -> Iterator[Callable[[str], FaultyUpstream]]:
    servers: list[FaultyUpstream] = []

    def start(behaviour: str) -> FaultyUpstream:
        server = FaultyUpstream(behaviour)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stopping.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir: Path) -> Callable[..., BackendConfig]:
    def make(name: str = "tiny", **overrides) -> BackendConfig:
        overrides.setdefault("engine", EngineConfig.of("transformers", device="cpu"))
        return BackendConfig(model=str(tiny_model_dir), name=name, dtype="float32", **overrides)

    return make


@pytest.fixture(autouse=True)
def _no_api_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A RAGROUTE_API_KEY in the developer's shell must not turn auth on in tests that do not ask for it."""
    monkeypatch.delenv("RAGROUTE_API_KEY", raising=False)


def upstream_backend(base_url: str, timeout_s: float = 60.0, name: str | None = None, **engine) -> BackendConfig:
    return BackendConfig(name=name, timeout_s=timeout_s,
                         engine=EngineConfig.of("openai", base_url=base_url, max_retries=0, concurrency=256, **engine))


@pytest.fixture(scope="session")
def upstream() -> Callable[..., BackendConfig]:
    """``upstream(base_url, timeout_s=60, name=None, **engine)``: a role served by an OpenAI-compatible server."""
    return upstream_backend


@pytest.fixture(scope="session")
def sampled() -> SamplingConfig:
    """Sampling that gets visible text out of the tiny random model (greedy gives newlines)."""
    return SamplingConfig(temperature=1.0)


def chat_body(content: str, model: str = "router", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture(scope="session")
def chat() -> Callable[..., dict]:
    return chat_body


@pytest.fixture(scope="session")
def base_cfg() -> Callable[..., ServeConfig]:
    """A chat-only config (no RAG pipeline) with the given backends. Health probes are off unless a test passes
    ``health``: a probe would race the fault a test injects (and open the circuit before the request arrives)."""

    def make(student: BackendConfig, teacher: BackendConfig, **kwargs) -> ServeConfig:
        kwargs.setdefault("health", HealthConfig(probe_interval_s=0))
        return ServeConfig(rag=False, student=student, teacher=teacher, **kwargs)

    return make


class RawHTTP:
    """HTTP/1.1 over a plain socket, for what httpx would hide: bodies that never end, slow bodies, clients that
    leave mid-request."""

    @staticmethod
    def open(url: str, path: str, headers: dict[str, str], body: bytes = b"") -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=60)
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\n{lines}\r\n".encode() + body)
        return sock

    @staticmethod
    def read(sock: socket.socket) -> tuple[int, bytes]:
        """Status code and raw response (headers and body) once the server answers."""
        data = b""
        while b"\r\n\r\n" not in data and (part := sock.recv(65536)):
            data += part
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length")), 0)
        while len(rest) < length and (part := sock.recv(65536)):
            rest += part
        return int(head.split(b" ")[1]), head + b"\r\n\r\n" + rest


@pytest.fixture(scope="session")
def raw_http() -> type[RawHTTP]:
    return RawHTTP


def prometheus_sample(url: str, name: str, **labels: str) -> float:
    """One sample of the server's Prometheus text exposition (0 when the series does not exist yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


@pytest.fixture(scope="session")
def metric() -> Callable[..., float]:
    """``metric(url, name, **labels)``: one sample of the server's /metrics."""
    return prometheus_sample
