"""Probes: /health (the process is up; what system it serves), /ready (the engines are loaded), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from serve.routes.common import Service
from serve.schemas import HealthResponse

router = APIRouter()


@router.get("/health", response_model=HealthResponse)
async def health(service: Service) -> HealthResponse:
    state = "ready" if service.ready else ("failed" if service.load_error else "loading")
    return HealthResponse(engines=state, system=service.system_info())


@router.get("/ready")
async def ready(service: Service) -> JSONResponse:
    body = {"ready": service.ready, "error": service.load_error}
    if service.ready:
        body.update(student=service.model_name("student"), teacher=service.model_name("teacher"),
                    router=service.router.source if service.router else None, rag=service.pipeline is not None)
    return JSONResponse(body, status_code=200 if service.ready else 503)


@router.get("/metrics")
async def prometheus_metrics(service: Service) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
