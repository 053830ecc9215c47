"""The HTTP transport: uvicorn's h11 protocol with the connection limits uvicorn lacks.

uvicorn (h11) already bounds the request head's size (``h11_max_incomplete_event_size``), idle keep-alive
connections (``timeout_keep_alive``), open connections (``limit_concurrency``: 503) and the graceful shutdown
(``timeout_graceful_shutdown``); :func:`uvicorn_settings` maps the serve config onto those. What it has no
setting for is done here, in a subclass of its h11 protocol (the narrowest place: connection events and
timers, no request handling):

* the number of header lines (431), and a JSON body (not "Invalid HTTP request received.") for 431 and 400;
* a deadline for the request head, from connecting or from the end of the previous response: a slow-loris
  that trickles bytes, or a connection that never sends any, is closed with 408 (uvicorn's keep-alive timer
  starts only after a first response, and stops at the first byte of the next request);
* write deadlines: a client that accepts none of its response for ``write_timeout_s`` (the transport's
  buffer stays above its high-water mark) is cut off, and so is a request still writing ``write_timeout_s``
  after ``request_timeout_s``; the connection is aborted (a plain close would wait forever to flush to a
  client that does not read), which the request guard sees as a disconnect and cancels the generation;
* on shutdown, connections still open ``shutdown_timeout_s`` later are aborted (uvicorn cancels their tasks
  then, but a close waits for the flush).

Why h11 and not httptools (uvicorn's default where installed): httptools has no bound on the head's size,
and the protocol here builds on h11's. The server's throughput is bounded by the models, not by HTTP parsing.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import re
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from serve.config import HttpConfig, LimitsConfig

log = logging.getLogger("ragroute.serve")

_HEAD_END = re.compile(rb"\n\r?\n")  # the blank line that ends a request head (h11's own pattern)


def error_bytes(status: int, message: str, code: str) -> bytes:
    """A whole HTTP/1.1 error response with an OpenAI-style JSON body, closing the connection."""
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()
    phrase = http.HTTPStatus(status).phrase
    head = (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode() + body


class _CountingConnection(h11.Connection):
    """h11's connection, refusing a request head of more than ``max_head_bytes`` bytes or ``max_headers`` header
    lines (431), and keeping the status of a refused request for the error response.

    h11's own ``max_incomplete_event_size`` bounds a head only while it is incomplete: a 100 KB head that
    arrives in one read is parsed whole. So the head's end is looked for within the limit here, before h11
    parses it (in h11's receive buffer, which holds at most the limit plus one socket read)."""

    def __init__(self, max_headers: int, max_head_bytes: int, on_request: Any) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.max_headers, self.max_head_bytes, self.on_request = max_headers, max_head_bytes, on_request
        self.refusal: tuple[int, str, str] | None = None

    def _head_too_long(self) -> bool:
        # h11 0.16 keeps the bytes received and not yet parsed here (tests/serve/test_transport.py checks the 431);
        # another layout falls back to h11's own bound, which holds for heads that arrive in pieces.
        data = getattr(getattr(self, "_receive_buffer", None), "_data", b"")
        return len(data) > self.max_head_bytes and not _HEAD_END.search(data, 0, self.max_head_bytes)

    def next_event(self) -> Any:
        if self.their_state is h11.IDLE and self._head_too_long():
            self.refusal = (431, f"request head over the limit of {self.max_head_bytes} bytes", "header_too_large")
            raise h11.RemoteProtocolError("request head too long", error_status_hint=431)
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                self.refusal = (431, f"request head over the limit of {self.max_head_bytes} bytes",
                                "header_too_large")
            else:
                self.refusal = (400, f"invalid HTTP request: {exc}", "invalid_http")
            raise
        if isinstance(event, h11.Request):
            if len(event.headers) > self.max_headers:
                self.refusal = (431, f"request has {len(event.headers)} headers; the limit is {self.max_headers}",
                                "too_many_headers")
                raise h11.RemoteProtocolError("too many headers", error_status_hint=431)
            self.on_request()
        return event


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the limits of :class:`serve.config.HttpConfig` (see the module docstring).
    :func:`protocol_class` binds the settings."""

    http_cfg = HttpConfig()
    request_timeout_s = LimitsConfig().request_timeout_s + LimitsConfig().body_timeout_s

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _CountingConnection(self.http_cfg.max_headers, self.http_cfg.max_header_bytes,
                                        self._request_arrived)
        self._timers: dict[str, asyncio.TimerHandle] = {}

    # -------------------------------------------------------------------------------------------- timers

    def _arm(self, name: str, seconds: float, callback: Any, *args: Any) -> None:
        self._disarm(name)
        self._timers[name] = self.loop.call_later(seconds, callback, *args)

    def _disarm(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("head", self.http_cfg.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        for name in list(self._timers):
            self._disarm(name)
        super().connection_lost(exc)

    def _request_arrived(self) -> None:
        self._disarm("head")
        self._arm("request", self.request_timeout_s + self.http_cfg.write_timeout_s, self.cut_off, "deadline")

    def on_response_complete(self) -> None:
        self._disarm("request")
        if not self.transport.is_closing():
            # Armed before uvicorn handles a pipelined request, which disarms it again.
            self._arm("head", self.http_cfg.header_timeout_s, self._head_timed_out)
        super().on_response_complete()

    def _head_timed_out(self) -> None:
        if self.transport.is_closing():
            return
        seconds = self.http_cfg.header_timeout_s
        self.transport.write(error_bytes(408, f"request head not received within {seconds:g}s", "header_timeout"))
        self.transport.close()
        self._arm("abort", self.http_cfg.write_timeout_s, self.transport.abort)  # if it never reads the 408

    # -------------------------------------------------------------------------------------------- writing

    def pause_writing(self) -> None:
        super().pause_writing()
        self._arm("write", self.http_cfg.write_timeout_s, self.cut_off, "slow_reader")

    def resume_writing(self) -> None:
        self._disarm("write")
        super().resume_writing()

    def cut_off(self, reason: str) -> None:
        """Abort the connection; the request's generation is cancelled and counted with ``reason``."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.scope["state"]["cut_off"] = reason
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "client"
        log.warning("%s cut off (%s): it did not take its response in time", client, reason)
        self.transport.abort()

    def send_400_response(self, msg: str) -> None:
        status, message, code = self.conn.refusal or (400, msg, "invalid_http")
        log.info("refused a request with %d: %s", status, message)
        self.transport.write(error_bytes(status, message, code))
        self.transport.close()

    # -------------------------------------------------------------------------------------------- shutdown

    def shutdown(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.scope["state"]["cut_off"] = "shutdown"  # cancelled from now on: by the shutdown
        super().shutdown()
        self._arm("abort", self.http_cfg.shutdown_timeout_s, self.transport.abort)


def protocol_class(http_cfg: HttpConfig, limits: LimitsConfig) -> type[GuardedH11Protocol]:
    """:class:`GuardedH11Protocol` with these settings (uvicorn instantiates the class per connection)."""
    return type("ServeH11Protocol", (GuardedH11Protocol,),
                {"http_cfg": http_cfg, "request_timeout_s": limits.body_timeout_s + limits.request_timeout_s})


def uvicorn_settings(http_cfg: HttpConfig, limits: LimitsConfig) -> dict[str, Any]:
    """uvicorn.Config arguments for these limits: its own settings where it has them, the protocol above for
    the rest."""
    return {
        "http": protocol_class(http_cfg, limits),
        "h11_max_incomplete_event_size": http_cfg.max_header_bytes,
        "timeout_keep_alive": http_cfg.keep_alive_s,
        "limit_concurrency": http_cfg.max_connections,
        "timeout_graceful_shutdown": http_cfg.shutdown_timeout_s,
    }
