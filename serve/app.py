"""The HTTP layer: FastAPI routes, auth, limits, error bodies and request metrics.

Every client mistake gets a 4xx with an OpenAI-style body ``{"error": {"message", "type", "param", "code"}}``
whose message names the problem; only server-side failures are 5xx (502 no model could answer, 503 not ready,
504 deadline).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragroute.engines.base import SamplingConfig
from ragroute.quality import parse_citations
from serve.config import ServeConfig
from serve.metrics import ServeMetrics
from serve.schemas import AnswerRequest, AnswerResponse, ChatCompletionRequest
from serve.service import (
    GenerationFailed,
    NotReady,
    Overloaded,
    RoutedService,
    StreamHandle,
    within,
)

log = logging.getLogger("ragroute.serve")


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(status: int, message: str, type_: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


# Pydantic adds the union member to an error's location ("stop.str", "stop.list[str]"); users know the field.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|bytes|[\w-]+\[.*\]|constrained-\w+)$")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
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


API_PATHS = frozenset({"/v1/answer", "/v1/chat/completions", "/v1/models"})


class ObservabilityMiddleware:
    """Pure ASGI (no response buffering, streaming-safe): body-size limit, in-flight gauge, requests by route
    template and status, and latency per route."""

    def __init__(self, app: Any, metrics: ServeMetrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            response = error_response(413, f"request body is {int(length)} bytes; the limit is {self.max_body_bytes}",
                                      "invalid_request_error", code="body_too_large")
            await response(scope, receive, send)
            # Label by endpoint only for known ones: raw paths would let clients create unbounded series.
            self.metrics.requests.labels(scope["path"] if scope["path"] in API_PATHS else "unmatched", "413").inc()
            return
        is_api = scope["path"].startswith("/v1/")
        if is_api:
            self.metrics.in_flight.inc()

        async def send_with_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(path, str(status["code"])).inc()
            self.metrics.request_latency.labels(path).observe(time.perf_counter() - started)
            if is_api:
                self.metrics.in_flight.dec()


def cascade_fields(result: Any) -> dict[str, Any]:
    """The routing part of an /v1/answer response made by the cascade."""
    return {
        "routed_to": "teacher" if result.escalated else "student",
        "router": {"score": result.score, "threshold": result.threshold, "source": "cascade"},
        "cascade": {"escalated": result.escalated, "score": result.score, "threshold": result.threshold,
                    "verdict": result.verdict, "student_verdict_probs": result.student_probs,
                    "escalation_waste_s": result.waste_s},
        "timings": {"escalation_waste": result.waste_s},
    }


def answer_response(question: str, prepared: Any, outcome: Any, started: float, route_s: float,
                    routing: dict[str, Any], include_documents: bool) -> AnswerResponse:
    """The /v1/answer body: the answer, its citations resolved to documents, routing, usage and timings."""
    docs = prepared.docs
    citations = [
        {"index": i, "pmid": docs[i].id, "title": docs[i].title} for i in parse_citations(outcome.text) if 0 <= i < len(docs)
    ]
    timings = {k: float(v) for k, v in prepared.timings.items()}
    timings.update(routing.pop("timings", {}))
    timings.update(route=route_s, generation=outcome.generation_s, total=time.perf_counter() - started)
    return AnswerResponse(
        id=f"ans-{uuid.uuid4().hex}",
        question=question,
        answer=outcome.text,
        citations=citations,
        answered_by=outcome.answered_by,
        model=outcome.model,
        fallback=vars(outcome.fallback) if outcome.fallback else None,
        finish_reason=outcome.finish_reason,
        usage={"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
               "total_tokens": outcome.prompt_tokens + outcome.completion_tokens},
        timings=timings,
        documents=[
            {"index": i, "pmid": d.id, "title": d.title, "score": float(d.score), "text": d.text}
            for i, d in enumerate(docs)
        ] if include_documents else None,
        **routing,
    )


def resolve_api_key(cfg: ServeConfig) -> str | None:
    if cfg.auth.api_key:
        return cfg.auth.api_key
    if cfg.auth.api_key_env:
        return os.environ.get(cfg.auth.api_key_env) or None
    return None


def create_app(cfg: ServeConfig, service: RoutedService | None = None,
               on_load_failure: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The FastAPI app. Engines load in the background after startup, so /health answers at once and /ready
    turns 200 when they are up; ``on_load_failure`` lets the runner stop the process if they cannot load."""
    service = service or RoutedService(cfg)
    metrics = service.metrics
    api_key = resolve_api_key(cfg)
    limits = cfg.limits

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

    app = FastAPI(title="ragroute", summary="Routed biomedical RAG answers and OpenAI-compatible chat",
                  lifespan=lifespan)
    app.state.service = service
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, max_body_bytes=limits.max_body_bytes)

    # ------------------------------------------------------------------------------------------- errors

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(400, message, "invalid_request_error", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        messages = {404: f"no such endpoint: {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        return error_response(exc.status_code, messages.get(exc.status_code, str(exc.detail)), "invalid_request_error")

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return error_response(429, str(exc), "rate_limit_error", code="overloaded", headers={"Retry-After": "1"})

    @app.exception_handler(NotReady)
    async def _not_ready(request: Request, exc: NotReady) -> JSONResponse:
        return error_response(503, str(exc), "service_unavailable", code="not_ready", headers={"Retry-After": "5"})

    @app.exception_handler(GenerationFailed)
    async def _failed(request: Request, exc: GenerationFailed) -> JSONResponse:
        if exc.timed_out:
            return error_response(504, str(exc), "timeout", code="generation_timeout")
        return error_response(502, str(exc), "upstream_error", code="generation_failed")

    # ------------------------------------------------------------------------------------------- helpers

    async def require_api_key(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            reason = "missing bearer token" if not header else "invalid API key"
            raise APIError(401, f"{reason}: send 'Authorization: Bearer <key>'", "authentication_error",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def sampling_for(max_tokens: int | None, temperature: float | None, top_p: float | None = None,
                     stop: list[str] | None = None, seed: int | None = 0) -> SamplingConfig:
        max_tokens = limits.max_tokens_default if max_tokens is None else max_tokens
        if max_tokens > limits.max_tokens_limit:
            raise APIError(400, f"max_tokens is {max_tokens}; the limit is {limits.max_tokens_limit}",
                           param="max_tokens", code="max_tokens_too_large")
        return SamplingConfig(
            max_tokens=max_tokens,
            temperature=cfg.temperature if temperature is None else float(temperature),
            top_p=1.0 if top_p is None else float(top_p),
            stop=list(stop or []),
            seed=seed,
        )

    def check_question(text: str, param: str) -> str:
        text = text.strip()
        if not text:
            raise APIError(400, f"{param} is empty", param=param, code="empty_question")
        if len(text) > limits.max_question_chars:
            raise APIError(400, f"{param} is {len(text)} characters; the limit is {limits.max_question_chars}",
                           param=param, code="question_too_long")
        return text

    async def with_deadline(coro: Any) -> Any:
        try:
            return await within(coro, limits.request_timeout_s)
        except TimeoutError:
            raise GenerationFailed(f"request exceeded its {limits.request_timeout_s:g}s deadline", timed_out=True) from None

    # ------------------------------------------------------------------------------------------- probes

    @app.get("/health")
    async def health() -> dict[str, Any]:
        state = "ready" if service.ready else ("failed" if service.load_error else "loading")
        return {"status": "ok", "engines": state}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        body = {"ready": service.ready, "error": service.load_error}
        if service.ready:
            body.update(student=service.model_name("student"), teacher=service.model_name("teacher"),
                        router=service.router.source if service.router else None, rag=service.pipeline is not None)
        return JSONResponse(body, status_code=200 if service.ready else 503)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------------------------------- /v1/answer

    @app.post("/v1/answer", response_model=AnswerResponse, response_model_exclude_none=False,
              dependencies=[Depends(require_api_key)])
    async def answer(body: AnswerRequest) -> AnswerResponse:
        service.require_ready()
        question = check_question(body.question, "question")
        options = body.options
        sampling = sampling_for(options.max_tokens, options.temperature)
        return await with_deadline(_answer(question, options, sampling))

    async def _answer(question: str, options: Any, sampling: SamplingConfig) -> AnswerResponse:
        started = time.perf_counter()
        async with service.limiter.slot():
            prepared = await service.prepare(question)
            if service.cascade is not None and options.model == "router":
                result = await service.cascade.answer(service, prepared.messages, sampling, options.fallback)
                return answer_response(question, prepared, result.outcome, started, 0.0, cascade_fields(result),
                                       options.include_documents)
            route_started = time.perf_counter()
            forced = None if options.model == "router" else options.model
            decision = service.decide(question, forced, [d.score for d in prepared.docs])
            route_s = time.perf_counter() - route_started
            metrics.stage_latency.labels("route").observe(route_s)
            role = "teacher" if decision.use_teacher else "student"
            outcome = await service.complete(role, prepared.messages, sampling, allow_fallback=options.fallback)
        router = {"score": decision.score, "threshold": decision.threshold, "source": decision.source}
        return answer_response(question, prepared, outcome, started, route_s, {"routed_to": role, "router": router},
                               options.include_documents)

    # ------------------------------------------------------------------------------------------- chat

    def models_by_name() -> dict[str, str | None]:
        names: dict[str, str | None] = {"router": None, "student": "student", "teacher": "teacher"}
        for role in ("student", "teacher"):
            names.setdefault(service.model_name(role), role)
        return names

    @app.get("/v1/models", dependencies=[Depends(require_api_key)])
    async def list_models() -> dict[str, Any]:
        created = int(time.time())
        return {"object": "list",
                "data": [{"id": name, "object": "model", "created": created, "owned_by": "ragroute"}
                         for name in models_by_name()]}

    @app.post("/v1/chat/completions", dependencies=[Depends(require_api_key)])
    async def chat_completions(body: ChatCompletionRequest) -> Response:
        service.require_ready()
        known = models_by_name()
        if body.model not in known:
            raise APIError(404, f"unknown model '{body.model}' (use one of: {', '.join(known)})", param="model",
                           code="model_not_found")
        if len(body.messages) > limits.max_messages:
            raise APIError(400, f"{len(body.messages)} messages; the limit is {limits.max_messages}", param="messages")
        total_chars = sum(len(m.content) for m in body.messages)
        if total_chars > limits.max_prompt_chars:
            raise APIError(400, f"messages hold {total_chars} characters; the limit is {limits.max_prompt_chars}",
                           param="messages", code="prompt_too_long")
        user_turns = [m.content for m in body.messages if m.role == "user"]
        if not user_turns:
            raise APIError(400, "messages need at least one user message", param="messages")
        question = check_question(user_turns[-1], "messages[-1].content (last user message)")
        stop = [body.stop] if isinstance(body.stop, str) else body.stop
        sampling = sampling_for(body.max_completion_tokens or body.max_tokens, body.temperature, body.top_p, stop,
                                body.seed if body.seed is not None else 0)
        messages = [{"role": m.role, "content": m.content} for m in body.messages]
        forced = known[body.model]
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return await with_deadline(_chat_stream(question, forced, messages, sampling, body.model, include_usage))
        return await with_deadline(_chat(question, forced, messages, sampling, body.model))

    def ragroute_info(role: str, answered_by: str, decision: Any, fallback: Any) -> dict[str, Any]:
        return {"routed_to": role, "answered_by": answered_by,
                "router": {"score": decision.score, "threshold": decision.threshold, "source": decision.source},
                "fallback": vars(fallback) if fallback else None}

    def route_headers(role: str, answered_by: str) -> dict[str, str]:
        return {"x-ragroute-routed-to": role, "x-ragroute-answered-by": answered_by}

    async def _chat(question: str, forced: str | None, messages: list[dict[str, str]], sampling: SamplingConfig,
                    requested_model: str) -> JSONResponse:
        async with service.limiter.slot():
            decision = service.decide(question, forced)
            role = "teacher" if decision.use_teacher else "student"
            outcome = await service.complete(role, messages, sampling)
        body = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": outcome.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": outcome.text},
                         "finish_reason": outcome.finish_reason, "logprobs": None}],
            "usage": {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
                      "total_tokens": outcome.prompt_tokens + outcome.completion_tokens},
            "ragroute": ragroute_info(role, outcome.answered_by, decision, outcome.fallback),
        }
        return JSONResponse(body, headers=route_headers(role, outcome.answered_by))

    async def _chat_stream(question: str, forced: str | None, messages: list[dict[str, str]],
                           sampling: SamplingConfig, requested_model: str, include_usage: bool) -> StreamingResponse:
        await service.limiter.acquire()
        try:
            decision = service.decide(question, forced)
            role = "teacher" if decision.use_teacher else "student"
            handle = await service.open_stream(role, messages, sampling)
        except BaseException:
            service.limiter.release()
            raise
        deadline = time.monotonic() + limits.request_timeout_s
        info = ragroute_info(role, handle.answered_by, decision, handle.fallback)
        return StreamingResponse(
            _sse(handle, info, include_usage, deadline),
            media_type="text/event-stream",
            headers={**route_headers(role, handle.answered_by), "Cache-Control": "no-cache"},
        )

    async def _sse(handle: StreamHandle, info: dict[str, Any], include_usage: bool,
                   deadline: float) -> AsyncIterator[str]:
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                       "model": handle.model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        try:
            yield event({"role": "assistant", "content": ""}, ragroute=info)
            chunks = service.iterate(handle)
            last = None
            try:
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"request exceeded its {limits.request_timeout_s:g}s deadline")
                    try:
                        chunk = await within(anext(chunks), remaining)
                    except StopAsyncIteration:
                        break
                    last = chunk
                    if chunk.text:
                        yield event({"content": chunk.text})
            except Exception as exc:  # mid-answer failure: the text so far is out, so end with an error event
                kind = "timeout" if isinstance(exc, TimeoutError) else "upstream_error"
                message = str(exc) or type(exc).__name__
                yield f"data: {json.dumps(error_body(f'{handle.answered_by} failed mid-answer: {message}', kind))}\n\n"
                return
            finally:
                await chunks.aclose()
            yield event({}, finish=(last.finish_reason if last else None) or "stop")
            if include_usage and last is not None:
                prompt, completion = last.prompt_tokens or 0, last.completion_tokens or 0
                usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
                payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                           "model": handle.model, "choices": [], "usage": usage}
                yield f"data: {json.dumps(payload)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            service.limiter.release()

    return app
