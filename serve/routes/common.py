"""What every route needs: the service, request limits and the served system's sampling. (Auth is checked by
the request guard, :mod:`serve.guard`, before the body is read.)"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated, Any

from fastapi import Depends, Request

from ragroute.engines.base import Message, SamplingConfig
from serve.errors import APIError
from serve.limits import check_max_tokens, check_stop
from serve.metrics import set_request_deadline
from serve.schemas import SamplingOptions
from serve.service import GenerationFailed, RoutedService, within


def get_service(request: Request) -> RoutedService:
    return request.app.state.service


Service = Annotated[RoutedService, Depends(get_service)]


def sampling_for(service: RoutedService, options: SamplingOptions, max_tokens: int | None = None,
                 param: str = "max_tokens") -> SamplingConfig:
    """The served system's sampling with the request's overrides: ``max_tokens`` within the limit, stop strings
    bounded. (Whether the answer fits the model's context is :func:`fitted`'s check, once the model is known.)"""
    base = service.sampling
    limits = service.cfg.limits
    overrides: dict[str, Any] = {
        name: getattr(options, name)
        for name in ("min_tokens", "temperature", "top_p", "repetition_penalty", "seed")
        if getattr(options, name) is not None
    }
    if options.stop is not None:
        overrides["stop"] = check_stop([options.stop] if isinstance(options.stop, str) else options.stop, limits)
    tokens = check_max_tokens(max_tokens or options.max_tokens, base.max_tokens, limits, param, options.min_tokens)
    try:
        return replace(base, max_tokens=tokens, **overrides)
    except ValueError as exc:
        raise APIError(400, f"invalid sampling options: {exc}") from None


def check_question(service: RoutedService, text: str, param: str) -> str:
    text = text.strip()
    limit = service.cfg.limits.max_question_chars
    if not text:
        raise APIError(400, f"{param} is empty", param=param, code="empty_question")
    if len(text) > limit:
        raise APIError(400, f"{param} is {len(text)} characters; the limit is {limit}", param=param,
                       code="question_too_long")
    return text


async def fitted(service: RoutedService, role: str, messages: list[Message], sampling: SamplingConfig,
                 explicit: bool, allow_fallback: bool = True) -> SamplingConfig:
    """``sampling`` with ``max_tokens`` checked against (or, unrequested, shrunk to) the context the prompt leaves
    in every model that may answer."""
    max_tokens = await service.fit_prompt(role, messages, sampling.max_tokens, explicit, allow_fallback)
    if max_tokens < sampling.min_tokens:
        raise APIError(400, f"the prompt leaves room for {max_tokens} tokens, fewer than min_tokens "
                       f"({sampling.min_tokens})", param="min_tokens", code="context_length_exceeded")
    return replace(sampling, max_tokens=max_tokens)


async def with_deadline(service: RoutedService, coro: Any) -> Any:
    seconds = service.cfg.limits.request_timeout_s
    set_request_deadline(time.monotonic() + seconds)
    try:
        return await within(coro, seconds)
    except TimeoutError:
        raise GenerationFailed(f"request exceeded its {seconds:g}s deadline", timed_out=True) from None
