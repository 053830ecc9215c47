"""The HTTP layer: the FastAPI app, composed of the route modules (:mod:`serve.routes`), the error handlers
(:mod:`serve.errors`), the request guard (:mod:`serve.guard`: request ids, auth before the body, body limits,
cancellation on disconnect, JSON 500s) and the metrics middleware (:mod:`serve.middleware`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from serve.auth import resolve_api_key
from serve.config import ServeConfig
from serve.errors import install_error_handlers
from serve.guard import RequestGuard
from serve.middleware import ObservabilityMiddleware
from serve.routes import answer, chat, health
from serve.service import RoutedService


def create_app(cfg: ServeConfig, service: RoutedService | None = None,
               on_load_failure: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The FastAPI app. Engines load in the background after startup, so /health answers at once and /ready
    turns 200 when they are up; ``on_load_failure`` lets the runner stop the process if they cannot load."""
    service = service or RoutedService(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async def load() -> None:
            try:
                await service.start()
            except Exception as exc:
                if on_load_failure is not None:
                    on_load_failure(exc)

        loader = asyncio.create_task(load())
        try:
            yield
        finally:
            loader.cancel()
            await service.close()

    docs = {} if cfg.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    # No trailing-slash redirects: Starlette builds them from the Host header, so "POST /v1/answer/" with
    # "Host: evil.example" would send the client to http://evil.example/v1/answer. Such a path is a 404 JSON.
    app = FastAPI(title="ragroute", summary="Routed biomedical RAG answers and OpenAI-compatible chat",
                  lifespan=lifespan, redirect_slashes=False, **docs)
    app.state.service = service
    limits = cfg.limits
    app.add_middleware(RequestGuard, max_body_bytes=limits.max_body_bytes, body_timeout_s=limits.body_timeout_s,
                       api_key=resolve_api_key(cfg), protected=lambda path: path.startswith("/v1/"),
                       max_per_client=limits.max_concurrent_per_client)
    app.add_middleware(ObservabilityMiddleware, metrics=service.metrics)  # added last: outermost
    install_error_handlers(app)
    for module in (health, answer, chat):
        app.include_router(module.router)
    return app
