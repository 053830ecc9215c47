"""Running an ASGI app under uvicorn: in the foreground (the CLI) or in a background thread (tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from serve.config import HttpConfig, LimitsConfig


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free port (read it back with ``sock.getsockname()[1]``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def make_server(app: Any, log_level: str = "warning", http: HttpConfig | None = None,
                limits: LimitsConfig | None = None):
    """A uvicorn server for ``app`` with the connection limits of ``http`` (:mod:`serve.transport`; defaults
    when None) and the request deadline of ``limits``."""
    import uvicorn

    from serve.transport import uvicorn_settings

    settings = uvicorn_settings(http or HttpConfig(), limits or LimitsConfig())
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on", **settings))


@contextmanager
def server_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                     start_timeout_s: float = 30.0, http: HttpConfig | None = None,
                     limits: LimitsConfig | None = None) -> Iterator[str]:
    """Serve ``app`` from a daemon thread for the ``with`` block; yields its base URL (``http://host:port``)."""
    sock = bind_socket(host, port)
    server = make_server(app, log_level=log_level, http=http, limits=limits)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="uvicorn")
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    bound_port = sock.getsockname()[1]
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
