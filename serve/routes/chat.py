"""OpenAI-compatible chat: GET /v1/models and POST /v1/chat/completions (whole or streamed as server-sent events).

``model`` is ``router`` (route on the last user message), ``student``, ``teacher`` or a served model's name.
Messages go to the model as sent (no retrieval: clients bring their own context).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from ragroute.engines.base import Chunk, Message, SamplingConfig
from serve.errors import APIError, error_body
from serve.limits import check_messages
from serve.metrics import set_request_deadline
from serve.routes.answer import usage_of
from serve.routes.common import (
    Service,
    check_question,
    fitted,
    sampling_for,
    with_deadline,
)
from serve.routing import RouteDecision
from serve.schemas import (
    AssistantMessage,
    CascadeOut,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    ChunkDelta,
    ModelCard,
    ModelList,
    RagrouteInfo,
    RouterDecisionOut,
)
from serve.service import CascadeStep, RoutedService, StreamHandle, within

router = APIRouter()


def models_by_name(service: RoutedService) -> dict[str, str | None]:
    """Every name a request may use -> the role it forces (None: the router decides)."""
    names: dict[str, str | None] = {"router": None, "student": "student", "teacher": "teacher"}
    for role in ("student", "teacher"):
        names.setdefault(service.model_name(role), role)
    return names


@router.get("/v1/models", response_model=ModelList)
async def list_models(service: Service) -> ModelList:
    created = int(time.time())
    return ModelList(data=[ModelCard(id=name, created=created) for name in models_by_name(service)])


def _check_messages(service: RoutedService, body: ChatCompletionRequest) -> str:
    """The question to route on (the last user message), after the limits on the messages."""
    check_messages([m.content for m in body.messages], service.cfg.limits)
    user_turns = [m.content for m in body.messages if m.role == "user"]
    if not user_turns:
        raise APIError(400, "messages need at least one user message", param="messages")
    return check_question(service, user_turns[-1], "messages[-1].content (last user message)")


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest,
                           service: Service) -> JSONResponse | StreamingResponse:
    unsupported = body.unsupported()
    if unsupported:
        raise APIError(400, f"'{unsupported[0]}' is not supported by this server (it would be ignored, so it is "
                       f"refused); supported fields: {', '.join(body.supported())}", param=unsupported[0],
                       code="unsupported_parameter")
    service.require_ready()
    known = models_by_name(service)
    if body.model not in known:
        raise APIError(404, f"unknown model '{body.model}' (use one of: {', '.join(known)})", param="model",
                       code="model_not_found")
    question = _check_messages(service, body)
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    sampling = sampling_for(service, body, body.max_completion_tokens, param)
    explicit = (body.max_completion_tokens or body.max_tokens) is not None
    messages = [{"role": m.role, "content": m.content} for m in body.messages]
    forced = known[body.model]
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await with_deadline(service, _chat_stream(service, question, forced, messages, sampling, explicit,
                                                         include_usage))
    return await with_deadline(service, _chat(service, question, forced, messages, sampling, explicit))


def ragroute_info(decision: RouteDecision, answered_by: str, fallback: object,
                  cascade: CascadeStep | None = None) -> RagrouteInfo:
    return RagrouteInfo(routed_to=decision.role, answered_by=answered_by,
                        router=RouterDecisionOut(**decision.summary()), fallback=vars(fallback) if fallback else None,
                        cascade=CascadeOut(**cascade.summary()) if cascade else None)


async def route_chat(service: RoutedService, question: str, forced: str | None, messages: list[Message],
                     sampling: SamplingConfig, explicit: bool) -> tuple[RouteDecision, CascadeStep | None, SamplingConfig]:
    """The decision for a chat request, with its sampling fitted to the models that may answer. In cascade mode
    (``model: router``) the student's verdict step decides; nothing of it is sent to the client."""
    if forced is None and service.cascade is not None:
        sampling = await fitted(service, "student", messages, sampling, explicit)
        cascade = await service.cascade_step(messages, sampling)
        return cascade.decision, cascade, sampling
    decision = service.decide(question, forced)
    return decision, None, await fitted(service, decision.role, messages, sampling, explicit)


def route_headers(role: str, answered_by: str) -> dict[str, str]:
    return {"x-ragroute-routed-to": role, "x-ragroute-answered-by": answered_by}


async def _chat(service: RoutedService, question: str, forced: str | None, messages: list[Message],
                sampling: SamplingConfig, explicit: bool) -> JSONResponse:
    async with service.limiter.slot():
        decision, cascade, sampling = await route_chat(service, question, forced, messages, sampling, explicit)
        outcome = await service.complete(decision.role, messages, sampling, after=cascade.kept if cascade else None)
    fallback = cascade.fallback if cascade and cascade.fallback else outcome.fallback
    completion = ChatCompletion(
        id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=outcome.model,
        choices=[ChatChoice(message=AssistantMessage(content=outcome.text), finish_reason=outcome.finish_reason)],
        usage=usage_of(outcome.prompt_tokens, outcome.completion_tokens),
        ragroute=ragroute_info(decision, outcome.answered_by, fallback, cascade),
    )
    return JSONResponse(completion.model_dump(mode="json"), headers=route_headers(decision.role, outcome.answered_by))


async def _chat_stream(service: RoutedService, question: str, forced: str | None, messages: list[Message],
                       sampling: SamplingConfig, explicit: bool, include_usage: bool) -> StreamingResponse:
    await service.limiter.acquire()
    try:
        # Cascade mode: the student's verdict step ends before the stream opens, so an escalated request streams
        # only the teacher's answer; a kept one streams the student's answer continued after that verdict.
        decision, cascade, sampling = await route_chat(service, question, forced, messages, sampling, explicit)
        handle = await service.open_stream(decision.role, messages, sampling, after=cascade.kept if cascade else None)
    except BaseException:
        service.limiter.release()
        raise
    fallback = cascade.fallback if cascade and cascade.fallback else handle.fallback
    events = ChunkEvents(handle.model, ragroute_info(decision, handle.answered_by, fallback, cascade))
    deadline = time.monotonic() + service.cfg.limits.request_timeout_s
    set_request_deadline(deadline)
    return StreamingResponse(
        _sse(service, handle, events, include_usage, deadline), media_type="text/event-stream",
        headers={**route_headers(decision.role, handle.answered_by), "Cache-Control": "no-cache"},
    )


class ChunkEvents:
    """The server-sent events of one streamed completion (one id and creation time for all)."""

    def __init__(self, model: str, info: RagrouteInfo) -> None:
        self.id, self.created, self.model, self.info = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model, info

    def event(self, chunk: ChatCompletionChunk) -> str:
        return f"data: {chunk.model_dump_json()}\n\n"

    def delta(self, delta: ChunkDelta, finish: str | None = None, first: bool = False) -> str:
        return self.event(ChatCompletionChunk(id=self.id, created=self.created, model=self.model,
                                              choices=[ChunkChoice(delta=delta, finish_reason=finish)],
                                              ragroute=self.info if first else None))

    def usage(self, last: Chunk) -> str:
        usage = usage_of(last.prompt_tokens or 0, last.completion_tokens or 0)
        return self.event(ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=[],
                                              usage=usage))


async def _relay(service: RoutedService, handle: StreamHandle, events: ChunkEvents, deadline: float,
                 last: list[Chunk]) -> AsyncIterator[str]:
    """The content events, until the model finishes; raises when it fails or the deadline passes."""
    seconds = service.cfg.limits.request_timeout_s
    chunks = service.iterate(handle)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"request exceeded its {seconds:g}s deadline")
            try:
                chunk = await within(anext(chunks), remaining)
            except StopAsyncIteration:
                return
            last[:] = [chunk]
            if chunk.text:
                yield events.delta(ChunkDelta(content=chunk.text))
    finally:
        await chunks.aclose()


async def _sse(service: RoutedService, handle: StreamHandle, events: ChunkEvents, include_usage: bool,
               deadline: float) -> AsyncIterator[str]:
    try:
        yield events.delta(ChunkDelta(role="assistant", content=""), first=True)
        last: list[Chunk] = []
        try:
            async for event in _relay(service, handle, events, deadline, last):
                yield event
        except Exception as exc:  # mid-answer failure: the text so far is out, so end with an error event
            kind = "timeout" if isinstance(exc, TimeoutError) else "upstream_error"
            message = f"{handle.answered_by} failed mid-answer: {str(exc) or type(exc).__name__}"
            yield f"data: {json.dumps(error_body(message, kind))}\n\n"
            return
        yield events.delta(ChunkDelta(), finish=(last[0].finish_reason if last else None) or "stop")
        if include_usage and last:
            yield events.usage(last[0])
        yield "data: [DONE]\n\n"
    finally:
        service.limiter.release()
