"""What every route needs: the service, the API-key check, request limits and the served system's sampling."""

from __future__ import annotations

import hmac
import os
from dataclasses import replace
from typing import Annotated, Any

from fastapi import Depends, Request

from ragroute.engines.base import SamplingConfig
from serve.config import ServeConfig
from serve.errors import APIError
from serve.schemas import SamplingOptions
from serve.service import GenerationFailed, RoutedService, within


def get_service(request: Request) -> RoutedService:
    return request.app.state.service


Service = Annotated[RoutedService, Depends(get_service)]


def resolve_api_key(cfg: ServeConfig) -> str | None:
    if cfg.auth.api_key:
        return cfg.auth.api_key
    if cfg.auth.api_key_env:
        return os.environ.get(cfg.auth.api_key_env) or None
    return None


async def require_api_key(request: Request) -> None:
    api_key = request.app.state.api_key
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        reason = "missing bearer token" if not header else "invalid API key"
        raise APIError(401, f"{reason}: send 'Authorization: Bearer <key>'", "authentication_error",
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def sampling_for(service: RoutedService, options: SamplingOptions, max_tokens: int | None = None) -> SamplingConfig:
    """The served system's sampling with the request's overrides; ``max_tokens`` within the limit."""
    base = service.sampling
    overrides: dict[str, Any] = {
        name: getattr(options, name)
        for name in ("min_tokens", "temperature", "top_p", "repetition_penalty", "seed")
        if getattr(options, name) is not None
    }
    if options.stop is not None:
        overrides["stop"] = [options.stop] if isinstance(options.stop, str) else list(options.stop)
    tokens = max_tokens or options.max_tokens or base.max_tokens
    limit = service.cfg.limits.max_tokens_limit
    if tokens > limit:
        raise APIError(400, f"max_tokens is {tokens}; the limit is {limit}", param="max_tokens",
                       code="max_tokens_too_large")
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


async def with_deadline(service: RoutedService, coro: Any) -> Any:
    seconds = service.cfg.limits.request_timeout_s
    try:
        return await within(coro, seconds)
    except TimeoutError:
        raise GenerationFailed(f"request exceeded its {seconds:g}s deadline", timed_out=True) from None
