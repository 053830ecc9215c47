"""POST /v1/answer: retrieve, route and answer one question with citations."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter

from ragroute.engines.base import SamplingConfig
from ragroute.quality import parse_citations
from serve.routes.common import (
    Service,
    check_question,
    fitted,
    sampling_for,
    with_deadline,
)
from serve.schemas import (
    AnswerOptions,
    AnswerRequest,
    AnswerResponse,
    CascadeOut,
    Citation,
    DocumentOut,
    RouterDecisionOut,
    Usage,
)
from serve.service import CascadeStep, Outcome, RoutedService

router = APIRouter()


@router.post("/v1/answer", response_model=AnswerResponse, response_model_exclude_none=False)
async def answer(body: AnswerRequest, service: Service) -> AnswerResponse:
    service.require_ready()
    question = check_question(service, body.question, "question")
    sampling = sampling_for(service, body.options, param="options.max_tokens")
    return await with_deadline(service, _answer(service, question, body.options, sampling))


async def _answer(service: RoutedService, question: str, options: AnswerOptions,
                  sampling: SamplingConfig) -> AnswerResponse:
    started = time.perf_counter()
    async with service.limiter.slot():
        prepared = await service.prepare(question)
        route_started = time.perf_counter()
        forced = None if options.model == "router" else options.model
        cascade: CascadeStep | None = None
        explicit = options.max_tokens is not None
        if forced is None and service.cascade is not None:
            # Cascade mode: the student's verdict step decides; both models may answer, so both must fit.
            sampling = await fitted(service, "student", prepared.messages, sampling, explicit)
            cascade = await service.cascade_step(prepared.messages, sampling, options.fallback)
            decision = cascade.decision
        else:
            decision = service.decide(question, forced, [d.score for d in prepared.docs])
            sampling = await fitted(service, decision.role, prepared.messages, sampling, explicit, options.fallback)
        route_s = time.perf_counter() - route_started
        service.metrics.stage_latency.labels("route").observe(route_s)
        outcome = await service.complete(decision.role, prepared.messages, sampling, allow_fallback=options.fallback,
                                         after=cascade.kept if cascade else None)
        if cascade is not None and cascade.fallback is not None:
            outcome.fallback = cascade.fallback
    timings = {k: float(v) for k, v in prepared.timings.items()}
    timings.update(route=route_s, generation=outcome.generation_s, total=time.perf_counter() - started)
    return AnswerResponse(
        id=f"ans-{uuid.uuid4().hex}", question=question, answer=outcome.text,
        citations=_citations(outcome, prepared.docs), routed_to=decision.role, answered_by=outcome.answered_by,
        model=outcome.model, router=RouterDecisionOut(**decision.summary()),
        fallback=vars(outcome.fallback) if outcome.fallback else None, finish_reason=outcome.finish_reason,
        usage=usage_of(outcome.prompt_tokens, outcome.completion_tokens), timings=timings,
        documents=[DocumentOut(index=i, pmid=d.id, title=d.title, score=float(d.score), text=d.text)
                   for i, d in enumerate(prepared.docs)] if options.include_documents else None,
        verdict=outcome.verdict, verdict_probs=outcome.verdict_probs,
        cascade=CascadeOut(**cascade.summary()) if cascade else None,
    )


def _citations(outcome: Outcome, docs: list) -> list[Citation]:
    return [Citation(index=i, pmid=docs[i].id, title=docs[i].title)
            for i in parse_citations(outcome.text) if 0 <= i < len(docs)]


def usage_of(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens)
