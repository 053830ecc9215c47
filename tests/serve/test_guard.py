"""The request guard on a real uvicorn server, driven over raw sockets where httpx would hide the abuse:
bodies that never end, keys checked before the body, slow bodies, unexpected errors, clients that leave.
After every abusive request a valid one is answered normally."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from serve.guard import RequestGuard
from serve.server import server_in_thread

KEY = "sekret-key"
LIMIT = 20_000
AUTH = {"authorization": f"Bearer {KEY}"}


class Probe:
    """What the routes saw: the slow route's start and its cancellation."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()


def guarded_app(probe: Probe) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"bytes": len(body), "request_id": request.scope["state"]["request_id"]})

    async def slow(request: Request) -> JSONResponse:
        await request.body()
        probe.started.set()
        try:
            await asyncio.Event().wait()  # work that only ends by cancellation
        except asyncio.CancelledError:
            probe.cancelled.set()
            raise
        return JSONResponse({})

    async def boom(request: Request) -> JSONResponse:
        raise RuntimeError("secret internal detail /etc/passwd")

    # As in serve.app: inside Starlette's own error middleware, around the routes.
    guard = Middleware(RequestGuard, max_body_bytes=LIMIT, body_timeout_s=1.0, api_key=KEY,
                       protected=lambda path: path.startswith("/v1/"))
    return Starlette(routes=[Route("/v1/echo", echo, methods=["POST"]), Route("/v1/slow", slow, methods=["POST"]),
                             Route("/boom", boom)], middleware=[guard])


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def server(probe: Probe) -> Iterator[str]:
    with server_in_thread(guarded_app(probe)) as url:
        yield url


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def assert_still_serves(url: str) -> None:
    response = httpx.post(f"{url}/v1/echo", content=b'{"ok": 1}', headers=AUTH, timeout=30)
    assert response.status_code == 200 and response.json()["bytes"] == 9


def test_chunked_body_over_the_limit_is_413_before_it_ends(raw_http, server):
    sock = raw_http.open(server, "/v1/echo", {**AUTH, "transfer-encoding": "chunked"})
    for _ in range(3):  # 3 x 8 KB > 20 KB, and the body never ends: only counting received bytes can refuse it
        sock.sendall(chunk(b"x" * 8192))
    status, raw = raw_http.read(sock)
    sock.close()
    assert status == 413, raw
    assert b"body_too_large" in raw and str(LIMIT).encode() in raw
    assert_still_serves(server)


def test_declared_length_over_the_limit_is_413_without_reading(raw_http, server):
    sock = raw_http.open(server, "/v1/echo", {**AUTH, "content-length": str(150_000_000)})
    status, raw = raw_http.read(sock)
    sock.close()
    assert status == 413 and b"150000000 bytes" in raw
    assert_still_serves(server)


def test_chunked_body_within_the_limit_is_read_whole(raw_http, server):
    sock = raw_http.open(server, "/v1/echo", {**AUTH, "transfer-encoding": "chunked"})
    sock.sendall(chunk(b"a" * 5000) + chunk(b"b" * 5000) + b"0\r\n\r\n")
    status, raw = raw_http.read(sock)
    sock.close()
    assert status == 200 and b'"bytes":10000' in raw


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": "Basic abc"}])
def test_auth_is_checked_before_the_body_is_read(raw_http, server, headers):
    sock = raw_http.open(server, "/v1/echo", {**headers, "transfer-encoding": "chunked"})
    sock.sendall(chunk(b"x" * 100))  # the body never ends; the answer must not wait for it
    status, raw = raw_http.read(sock)
    sock.close()
    assert status == 401, raw
    assert b"invalid_api_key" in raw and b"www-authenticate: Bearer" in raw.lower().replace(b"bearer", b"Bearer")
    assert_still_serves(server)


def test_a_body_that_does_not_arrive_in_time_is_408(raw_http, server):
    sock = raw_http.open(server, "/v1/echo", {**AUTH, "content-length": "100"})
    sock.sendall(b"0123456789")  # 10 of the 100 promised bytes, then silence
    status, raw = raw_http.read(sock)
    sock.close()
    assert status == 408 and b"body_timeout" in raw
    assert_still_serves(server)


def test_unexpected_error_is_json_500_with_request_id_and_no_internals(server, caplog):
    with caplog.at_level(logging.ERROR, logger="ragroute.serve"):
        response = httpx.get(f"{server}/boom", headers={"x-request-id": "req-42"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error" and "req-42" in error["message"]
    assert "secret" not in response.text and "RuntimeError" not in response.text
    assert response.headers["x-request-id"] == "req-42"
    assert any("req-42" in r.getMessage() and r.exc_info for r in caplog.records)
    assert_still_serves(server)


def test_request_ids_are_made_when_missing_or_unsafe(server):
    made = httpx.post(f"{server}/v1/echo", content=b"{}", headers=AUTH)
    assert made.headers["x-request-id"] == made.json()["request_id"] and len(made.json()["request_id"]) == 32
    unsafe = httpx.post(f"{server}/v1/echo", content=b"{}", headers={**AUTH, "x-request-id": "a b\tc" * 30})
    assert unsafe.json()["request_id"] != "a b\tc" * 30


def test_client_disconnect_cancels_the_work(raw_http, server, probe):
    sock = raw_http.open(server, "/v1/slow", {**AUTH, "content-length": "2"})
    sock.sendall(b"{}")
    assert probe.started.wait(30)
    sock.close()
    assert probe.cancelled.wait(30), "the handler kept running after its client left"
    assert_still_serves(server)


def test_open_paths_need_no_key(server):
    assert httpx.get(f"{server}/boom").status_code == 500  # reached the route: no 401
