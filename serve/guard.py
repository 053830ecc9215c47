"""The request guard: a pure-ASGI middleware that sits in front of every route.

In order, for each HTTP request:

1. a request id (the client's ``x-request-id`` if it is short and plain, else a new one), echoed in the
   response's ``x-request-id`` header and in every log line about the request;
2. auth on the headers, before a byte of the body is read (401), then the per-client cap on concurrent /v1
   requests (429; per API key, else per address);
3. the body, read here with a byte budget and a deadline: a declared ``Content-Length`` over the limit, or more
   bytes actually received (chunked uploads too), is a 413 as soon as the budget is exceeded; a body that does
   not arrive within ``body_timeout_s`` is a 408;
4. the app, run as a task that is cancelled when the client disconnects before the response is complete, so
   abandoned generations stop (streaming or not);
5. any exception the app lets through: a JSON 500 without internal text, logged with the request id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from serve.auth import bearer_rejection
from serve.metrics import REQUEST_STATE

log = logging.getLogger("ragroute.serve")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CLIENT_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


class ClientGone(Exception):
    pass


def json_error(status: int, message: str, type_: str, code: str | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) of an OpenAI-style error response."""
    body = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return status, raw, body


async def send_error(send: Send, status: int, message: str, type_: str, code: str | None = None,
                     headers: dict[str, str] | None = None) -> None:
    status, raw, body = json_error(status, message, type_, code, headers)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, max_bytes: int, timeout_s: float) -> bytes:
    """The whole request body; :class:`BodyTooLarge` as soon as more than ``max_bytes`` arrived,
    :class:`BodyTimeout` if it is not complete within ``timeout_s``, :class:`ClientGone` on disconnect."""
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > max_bytes:
                    raise BodyTooLarge
                parts.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(parts)
    except TimeoutError:
        raise BodyTimeout from None


class ClientCounts:
    """Requests open per client (API key, else address), at most ``limit`` each (0 = no cap)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.open = limit, Counter[str]()

    @staticmethod
    def client_of(scope: Scope, headers: dict[bytes, bytes]) -> str:
        key = headers.get(b"authorization")
        if key:  # a digest, so that keys are not kept in memory as they are
            return "key:" + hashlib.sha256(key).hexdigest()
        return "addr:" + str((scope.get("client") or ("unknown",))[0])

    @contextmanager
    def holding(self, client: str) -> Iterator[bool]:
        """True (and counted until the block ends) when ``client`` is under its cap, else False."""
        if self.limit and self.open[client] >= self.limit:
            yield False
            return
        self.open[client] += 1
        try:
            yield True
        finally:
            self.open[client] -= 1
            if not self.open[client]:
                del self.open[client]


class RequestGuard:
    """See the module docstring. ``protected(path)`` says which paths need the key (None = no auth) and count
    toward a client's ``max_per_client`` concurrent requests."""

    def __init__(self, app: Any, *, max_body_bytes: int, body_timeout_s: float, api_key: str | None,
                 protected: Callable[[str], bool], max_per_client: int = 0) -> None:
        self.app, self.max_body_bytes, self.body_timeout_s = app, max_body_bytes, body_timeout_s
        self.api_key, self.protected = api_key, protected
        self.clients = ClientCounts(max_per_client)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"")
        request_id = given.decode() if _CLIENT_REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        progress = {"started": False, "complete": False}

        async def send_tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                progress["started"] = True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                progress["complete"] = True
            await send(message)

        rejection = self._admit(scope["path"], headers)
        if rejection is not None:
            await send_error(send_tagged, *rejection)
            return
        if not self.protected(scope["path"]):
            await self._read_and_run(scope, receive, send_tagged, request_id, progress)
            return
        with self.clients.holding(self.clients.client_of(scope, headers)) as admitted:
            if not admitted:
                await send_error(send_tagged, 429, f"this client already has {self.clients.limit} requests in "
                                 "progress (limits.max_concurrent_per_client); wait for one to finish",
                                 "rate_limit_error", "too_many_client_requests", {"retry-after": "1"})
                return
            await self._read_and_run(scope, receive, send_tagged, request_id, progress)

    async def _read_and_run(self, scope: Scope, receive: Receive, send_tagged: Send, request_id: str,
                            progress: dict[str, bool]) -> None:
        try:
            body = await read_body(receive, self.max_body_bytes, self.body_timeout_s)
        except BodyTooLarge:
            await send_error(send_tagged, 413, f"request body is over the limit of {self.max_body_bytes} bytes",
                             "invalid_request_error", "body_too_large", {"connection": "close"})
            return
        except BodyTimeout:
            await send_error(send_tagged, 408, f"request body not received within {self.body_timeout_s:g}s",
                             "invalid_request_error", "body_timeout", {"connection": "close"})
            return
        except ClientGone:
            return
        await self._run(scope, receive, send_tagged, body, request_id, progress)

    def _admit(self, path: str, headers: dict[bytes, bytes]) -> tuple[Any, ...] | None:
        """An error (status, message, type, code, headers) for a request refused on its headers alone."""
        if self.api_key is not None and self.protected(path):
            reason = bearer_rejection(headers.get(b"authorization"), self.api_key)
            if reason is not None:
                return (401, f"{reason}: send 'Authorization: Bearer <key>'", "authentication_error",
                        "invalid_api_key", {"www-authenticate": "Bearer"})
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return (413, f"request body is {int(length)} bytes; the limit is {self.max_body_bytes}",
                    "invalid_request_error", "body_too_large", {"connection": "close"})
        return None

    async def _run(self, scope: Scope, receive: Receive, send: Send, body: bytes, request_id: str,
                   progress: dict[str, bool]) -> None:
        """Run the app on the buffered body; cancel it if the client leaves before the response is complete."""
        gone = asyncio.Event()
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        REQUEST_STATE.set(scope["state"])  # the app task's context: why its generation may be cancelled
        app_task = asyncio.ensure_future(self.app(scope, replay, send))

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            if not progress["complete"]:
                log.info("request %s: client disconnected; cancelling its work", request_id)
                app_task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await app_task
        except asyncio.CancelledError:
            if not gone.is_set():
                raise  # the server is shutting down, not the client leaving
        except Exception:
            log.exception("request %s: unhandled error", request_id)
            if not progress["started"]:
                await send_error(send, 500, f"internal server error (request id {request_id})", "server_error",
                                 "internal_error")
        finally:
            watcher.cancel()
            if not app_task.done():
                app_task.cancel()
