"""``main(cfg)``: check the settings can load, then serve the routed API under uvicorn until stopped."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

from ragroute.errors import UserError
from serve.config import ServeConfig

log = logging.getLogger("ragroute.serve")


def preflight(cfg: ServeConfig) -> None:
    """Fail before binding the port on what the user can fix: no API key on a public address, missing models,
    corpus or router file, or a configured system that differs from the one the artifacts were made with."""
    from ragroute.config import resolve_path
    from ragroute.models import resolve_model_path
    from serve.auth import check_auth_exposure
    from serve.routing import load_bundle
    from serve.system import resolve_served

    check_auth_exposure(cfg)
    if cfg.pipeline:
        resolve_path(cfg.pipeline, "pipeline config")
    if cfg.corpus and cfg.corpus.endswith((".json", ".jsonl")):  # not 'demo', a datasets dir or hub name
        resolve_path(cfg.corpus, "corpus")
    resolved = resolve_served(cfg, load_bundle(cfg.routing))  # raises when if_missing=error and there is no file
    for role in ("student", "teacher"):
        if getattr(cfg, role).engine.name == "openai":
            continue
        path = resolved[role].spec.model.path
        try:
            resolve_model_path(path)
        except UserError as exc:
            raise UserError(f"{role}: {exc}") from None
        if path.startswith(("/", ".", "~")) and not Path(path).expanduser().exists():
            raise UserError(f"{role}: model directory not found: {path}")


def main(cfg: ServeConfig) -> int:
    from serve.app import create_app
    from serve.server import bind_socket, make_server

    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ragroute_log = logging.getLogger("ragroute")  # a server's log lines carry time, level and source
    ragroute_log.setLevel(cfg.log_level.upper())
    ragroute_log.propagate = True
    ragroute_log.handlers = [h for h in ragroute_log.handlers if h.__class__.__name__ != "_CurrentStdout"]
    preflight(cfg)
    failure: list[BaseException] = []
    server = None

    def stop_on_load_failure(exc: BaseException) -> None:
        # A server whose engines cannot load must not linger half-alive behind a load balancer.
        failure.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(cfg, on_load_failure=stop_on_load_failure)
    try:
        sock = bind_socket(cfg.host, cfg.port)
    except OSError as exc:
        raise UserError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}") from None
    server = make_server(app, log_level=cfg.log_level, http=cfg.http, limits=cfg.limits)
    log.info("listening on http://%s:%d (engines load in the background; GET /ready)", cfg.host, sock.getsockname()[1])
    # uvicorn shuts down gracefully on SIGTERM (http.shutdown_timeout_s), then raises the signal again with the
    # handler it found: with the default one the process would die by SIGTERM instead of exiting 0.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
    if failure:
        exc = failure[0]
        if isinstance(exc, UserError):
            raise exc
        raise UserError(f"engines failed to load: {type(exc).__name__}: {exc}")
    return 0
