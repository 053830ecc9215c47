"""API errors: every client mistake is a 4xx with an OpenAI-style body ``{"error": {"message", "type", "param",
"code"}}`` whose message names the problem; only server-side failures are 5xx (502 no model could answer, 503
not ready, 504 deadline)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.api_error import APIError
from serve.service import GenerationFailed, ModelDown, NotReady, Overloaded

__all__ = ["APIError", "error_body", "error_response", "install_error_handlers", "validation_message"]


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(status: int, message: str, type_: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


# Pydantic adds the union member to an error's location ("stop.str", "stop.list[str]"); users know the field.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|bytes|[\w-]+\[.*\]|constrained-\w+)$")


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """One readable line naming the offending field(s) of a pydantic validation error."""
    problems: dict[str, list[str]] = {}
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return f"request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})", None
        loc = [str(part) for part in err.get("loc", ()) if part != "body" and not _UNION_MEMBER.match(str(part))]
        where = ".".join(loc) or "body"
        if err.get("type") == "missing":
            text = f"'{where}' is required"
        elif err.get("type") == "extra_forbidden":
            text = f"'{where}' is not a known field"
        else:
            text = f"'{where}': {err.get('msg')}"
        if text not in problems.setdefault(where, []):
            problems[where].append(text)
    messages = ["; or ".join(texts) for texts in problems.values()]
    return "invalid request: " + "; ".join(messages), next(iter(problems), None)


async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    message, param = validation_message(exc)
    content_type = request.headers.get("content-type", "")
    if content_type and "json" not in content_type:
        message += f" (the body must be JSON sent with 'Content-Type: application/json', not '{content_type}')"
    return error_response(400, message, "invalid_request_error", param)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    messages = {404: f"no such endpoint: {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
    return error_response(exc.status_code, messages.get(exc.status_code, str(exc.detail)), "invalid_request_error")


async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
    return error_response(429, str(exc), "rate_limit_error", code="overloaded", headers={"Retry-After": "1"})


async def _down(request: Request, exc: ModelDown) -> JSONResponse:
    return error_response(503, str(exc), "service_unavailable", code="model_down", headers={"Retry-After": "5"})


async def _not_ready(request: Request, exc: NotReady) -> JSONResponse:
    return error_response(503, str(exc), "service_unavailable", code="not_ready", headers={"Retry-After": "5"})


async def _failed(request: Request, exc: GenerationFailed) -> JSONResponse:
    if exc.timed_out:
        return error_response(504, str(exc), "timeout", code="generation_timeout")
    return error_response(502, str(exc), "upstream_error", code="generation_failed")


def install_error_handlers(app: FastAPI) -> None:
    for exc_type, handler in ((APIError, _api_error), (RequestValidationError, _validation_error),
                              (StarletteHTTPException, _http_error), (Overloaded, _overloaded),
                              (ModelDown, _down), (NotReady, _not_ready), (GenerationFailed, _failed)):
        app.add_exception_handler(exc_type, handler)
