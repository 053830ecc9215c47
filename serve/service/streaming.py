"""Streamed answers. The switch to the teacher can happen until the student's first non-blank token; after that
the text is already with the client, so a later failure ends the stream with an error instead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from ragroute.engines.base import Chunk, EngineError, Message, SamplingConfig
from serve.service.fallback import Fallback
from serve.service.outcomes import EmptyAnswer, StreamHandle, describe, within


async def next_chunk(stream: AsyncIterator[Chunk], timeout_s: float) -> Chunk | None:
    """The next chunk, None at the end; TimeoutError when the model is silent for ``timeout_s``."""
    try:
        return await within(anext(stream), timeout_s)
    except StopAsyncIteration:
        return None


async def close_stream(stream: AsyncIterator[Chunk]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # the stream already failed; its error was reported
            pass


class Streams:
    def __init__(self, fallback: Fallback) -> None:
        self.fallback = fallback
        self.models = fallback.models

    async def open(self, role: str, messages: list[Message], sampling: SamplingConfig, allowed: bool = True,
                   after: Any = None) -> StreamHandle:
        """An answer stream from ``role``, switched to the teacher if the student fails before its first token.
        ``after``: ``role``'s verdict step already taken (the cascade's)."""

        async def attempt(who: str, reject_blank: bool) -> StreamHandle:
            return await self._open_once(who, messages, sampling, reject_blank, after if who == role else None)

        return await self.fallback.run(role, allowed, attempt)

    async def _open_once(self, role: str, messages: list[Message], sampling: SamplingConfig, reject_blank: bool,
                         after: Any) -> StreamHandle:
        """Start ``role``'s stream and read up to its first non-blank chunk (or, for the teacher, its end)."""
        engine, timeout_s = self.models.engines[role], self.models.timeout_s(role)
        started = time.perf_counter()
        stream = aiter(engine.stream(messages, sampling, after))
        head: list[Chunk] = []
        try:
            while True:
                chunk = await next_chunk(stream, timeout_s)
                if chunk is None:
                    raise EngineError(f"{engine.model_name} ended its stream without finishing the answer")
                head.append(chunk)
                if chunk.text.strip():
                    break
                if chunk.finish_reason:  # finished, and every chunk so far was blank
                    if reject_blank:
                        raise EmptyAnswer(f"{engine.model_name} returned a blank answer")
                    break
        except BaseException:
            await close_stream(stream)
            raise
        self.models.recorder.first_token(role, time.perf_counter() - started)
        return StreamHandle(role, engine.model_name, None, head, stream, timeout_s, started)

    async def iterate(self, handle: StreamHandle) -> AsyncIterator[Chunk]:
        """All chunks of an opened stream; raises (EngineError/TimeoutError) if the model fails mid-answer."""
        recorder, last = self.models.recorder, None
        try:
            for chunk in handle.head:
                last = chunk
                yield chunk
            while last is None or last.finish_reason is None:
                chunk = await next_chunk(handle.rest, handle.timeout_s)
                if chunk is None:
                    break
                last = chunk
                yield chunk
        except (asyncio.CancelledError, GeneratorExit):  # the client left, or the request's deadline passed
            recorder.cancelled(handle.answered_by)
            raise
        except Exception as exc:
            recorder.failure(handle.answered_by, exc)
            self.models.breakers[handle.answered_by].record_failure(describe(exc))
            raise
        finally:
            await close_stream(handle.rest)
        if last is not None and last.finish_reason:
            recorder.success(handle.answered_by, last.prompt_tokens or 0, last.completion_tokens or 0,
                             time.perf_counter() - handle.started)
