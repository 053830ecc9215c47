"""Probes: /health (the process is up; what system it serves; each model's circuit), /ready (the engines are
loaded and some model can answer), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from serve.routes.common import Service
from serve.schemas import HealthResponse

router = APIRouter()


@router.get("/health", response_model=HealthResponse)
async def health(service: Service) -> HealthResponse:
    state = "ready" if service.ready else ("failed" if service.load_error else "loading")
    return HealthResponse(engines=state, system=service.system_info(), backends=service.backend_states())


@router.get("/ready")
async def ready(service: Service) -> JSONResponse:
    """200 when loaded and some model can answer (a down student's traffic goes to the teacher), else 503."""
    can_answer = service.can_answer()
    body = {"ready": can_answer, "error": service.load_error}
    if service.ready:
        body.update(student=service.model_name("student"), teacher=service.model_name("teacher"),
                    router=service.router.source if service.router else None, rag=service.pipeline is not None,
                    backends=service.backend_states())
        if not can_answer:
            body["error"] = "no model can answer: every circuit is open"
    return JSONResponse(body, status_code=200 if can_answer else 503)


@router.get("/metrics")
async def prometheus_metrics(service: Service) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
