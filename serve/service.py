"""The routed service behind the HTTP layer: prepare (RAG) -> route -> generate with timeout and fallback.

Nothing here knows about HTTP; :mod:`serve.app` maps the exceptions below to status codes. Fallback rules: a
student that raises, exceeds its ``timeout_s`` or answers only whitespace is replaced by the teacher (each
switch counted in metrics and reported in the response). When streaming, the switch can happen until the
student's first non-blank token; after that the text is already with the client, so a later failure ends the
stream with an error event instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from ragroute.engines.base import Message, SamplingConfig
from serve.backends import BackendError, Chunk, ServingBackend, create_backend
from serve.config import BackendConfig, ServeConfig
from serve.metrics import ServeMetrics
from serve.routing import QuestionRouter, RouteDecision, load_question_router

log = logging.getLogger("ragroute.serve")

ROLES = ("student", "teacher")


class Overloaded(Exception):
    """Every generation slot is busy and the wait queue is full (HTTP 429)."""


class NotReady(Exception):
    """The engines are still loading or failed to load (HTTP 503)."""


class GenerationFailed(Exception):
    """No model could answer: the teacher failed, or the student failed with fallback off (HTTP 502/504)."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class EmptyAnswer(Exception):
    pass


@dataclass
class FallbackInfo:
    from_model: str
    reason: str  # error, timeout, empty
    detail: str


@dataclass
class Outcome:
    """One finished generation and who produced it."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    answered_by: str
    model: str
    fallback: FallbackInfo | None
    generation_s: float


@dataclass
class StreamHandle:
    """An opened stream: the first chunks already read (so fallback could still happen) and the rest."""

    answered_by: str
    model: str
    fallback: FallbackInfo | None
    head: list[Chunk]
    rest: AsyncIterator[Chunk]
    timeout_s: float
    started: float = field(default_factory=time.perf_counter)


class ConcurrencyLimiter:
    """At most ``max_concurrent`` requests at once and ``max_queue`` waiting; beyond that :class:`Overloaded`."""

    def __init__(self, max_concurrent: int, max_queue: int, metrics: ServeMetrics) -> None:
        self._slots = asyncio.Semaphore(max_concurrent)
        self._max_queue = max_queue
        self._waiting = 0
        self._metrics = metrics

    async def acquire(self) -> None:
        if self._slots.locked() and self._waiting >= self._max_queue:
            self._metrics.rejected.inc()
            raise Overloaded("too many concurrent requests; retry later")
        self._waiting += 1
        self._metrics.queued.inc()
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
            self._metrics.queued.dec()

    def release(self) -> None:
        self._slots.release()

    @asynccontextmanager
    async def slot(self):
        await self.acquire()
        try:
            yield
        finally:
            self.release()


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, EmptyAnswer):
        return "empty"
    return "error"


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def within(awaitable: Any, seconds: float) -> Any:
    """``awaitable``'s result, or TimeoutError after ``seconds``. ``asyncio.timeout`` where it exists (3.11+):
    unlike ``wait_for`` before 3.12 it does not create a task, which counts once per streamed chunk."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:
        return await asyncio.wait_for(awaitable, seconds)
    async with timeout(seconds):
        return await awaitable


async def _next_chunk(stream: AsyncIterator[Chunk], timeout_s: float) -> Chunk | None:
    """The next chunk, None at the end; TimeoutError when the model is silent for ``timeout_s``."""
    try:
        return await within(anext(stream), timeout_s)
    except StopAsyncIteration:
        return None


async def _close(stream: AsyncIterator[Chunk]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # the stream already failed; its error was reported
            pass


class RoutedService:
    """Both models, the router and the RAG pipeline, with the rules that tie them together."""

    def __init__(self, cfg: ServeConfig, metrics: ServeMetrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics or ServeMetrics()
        self.backend_cfgs: dict[str, BackendConfig] = {"student": cfg.student, "teacher": cfg.teacher}
        self.backends: dict[str, ServingBackend] = {}
        self.router: QuestionRouter | None = None
        self.cascade: Any = None  # serve.cascade.Cascade when routing.cascade_rule is set
        self.pipeline: Any = None
        self.limiter = ConcurrencyLimiter(cfg.limits.max_concurrent, cfg.limits.max_queue, self.metrics)
        self._pipeline_pool = ThreadPoolExecutor(max_workers=cfg.pipeline_workers, thread_name_prefix="rag")
        self.ready = False
        self.load_error: str | None = None

    # ---------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load the router, both models and the RAG pipeline; set ``ready`` when all are up."""
        try:
            self.router = load_question_router(self.cfg.routing)
            if self.cfg.routing.cascade_rule:
                from serve.backends import model_spec_for
                from serve.cascade import load_cascade_for

                spec = model_spec_for(self.cfg.student)
                self.cascade = load_cascade_for(self.cfg.routing.cascade_rule, spec.tokenizer or spec.path)
            backends = {role: create_backend(cfg) for role, cfg in self.backend_cfgs.items()}
            self.backends = backends
            # One after the other: transformers' lazy imports are not thread-safe, and two threads importing it
            # at once fail with "cannot import name AutoTokenizer".
            for backend in backends.values():
                await backend.start()
            if self.cfg.rag:
                await asyncio.get_running_loop().run_in_executor(self._pipeline_pool, self._load_pipeline)
            self.ready = True
            log.info("ready: student=%s teacher=%s router=%s", backends["student"].model_name,
                     backends["teacher"].model_name, self.router.source)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("startup failed: %s", self.load_error)
            raise

    def _load_pipeline(self) -> None:
        from ragroute.rag.corpus import load_corpus
        from ragroute.rag.pipeline import PipelineConfig, RAGPipeline, load_pipeline_config

        pipeline_cfg = load_pipeline_config(self.cfg.pipeline) if self.cfg.pipeline else PipelineConfig()
        corpus = self.cfg.corpus or pipeline_cfg.corpus or "demo"
        pipeline = RAGPipeline(pipeline_cfg, load_corpus(corpus))
        pipeline.warmup()  # build/load the indexes now, not on the first user's request
        self.pipeline = pipeline

    async def close(self) -> None:
        for backend in self.backends.values():
            try:
                await backend.close()
            except Exception as exc:  # shutting down anyway; report and carry on with the others
                log.warning("closing %s: %s", backend.model_name, exc)
        self._pipeline_pool.shutdown(wait=False, cancel_futures=True)

    def require_ready(self) -> None:
        if not self.ready:
            raise NotReady(f"engines failed to load: {self.load_error}" if self.load_error else "engines are loading")

    def model_name(self, role: str) -> str:
        return self.backends[role].model_name if role in self.backends else self.backend_cfgs[role].name or role

    # ---------------------------------------------------------------------------------------- steps

    async def prepare(self, question: str) -> Any:
        """Retrieve, rerank, filter and build the prompt (``PreparedPrompt``) off the event loop."""
        if self.pipeline is None:
            raise NotReady("this server runs without the RAG pipeline (rag: false); use /v1/chat/completions")
        prepared = await asyncio.get_running_loop().run_in_executor(self._pipeline_pool, self.pipeline.prepare, question)
        for stage, seconds in prepared.timings.items():
            self.metrics.stage_latency.labels(stage).observe(seconds)
        return prepared

    def decide(self, question: str, forced: str | None, doc_scores: list[float] | None = None) -> RouteDecision:
        if forced in ROLES:
            decision = RouteDecision(use_teacher=forced == "teacher", score=None, threshold=None, source="forced")
        else:
            assert self.router is not None
            signals = None
            if doc_scores is not None and self.cfg.routing.use_retrieval_signals and self.router.source == "router":
                from router.features import retrieval_signals

                signals = retrieval_signals(doc_scores)
            decision = self.router.route(question, signals)
        self.metrics.routed.labels("teacher" if decision.use_teacher else "student", decision.source).inc()
        return decision

    def _may_fall_back(self, role: str, reason: str, allowed: bool) -> bool:
        fb = self.cfg.fallback
        return role == "student" and allowed and fb.enabled and bool(getattr(fb, f"on_{reason}"))

    def _record_failure(self, role: str, exc: BaseException) -> str:
        reason = _failure_reason(exc)
        self.metrics.errors.labels(role, reason).inc()
        log.warning("%s (%s) failed: %s: %s", role, self.model_name(role), reason, _describe(exc))
        return reason

    def _record_success(self, role: str, prompt_tokens: int, completion_tokens: int, seconds: float) -> None:
        self.metrics.answered.labels(role).inc()
        self.metrics.stage_latency.labels("generation").observe(seconds)
        self.metrics.tokens.labels(role, "prompt").inc(prompt_tokens)
        self.metrics.tokens.labels(role, "completion").inc(completion_tokens)

    # ---------------------------------------------------------------------------------------- generation

    async def _complete_once(
        self, role: str, messages: list[Message], sampling: SamplingConfig, reject_blank: bool
    ) -> Outcome:
        backend = self.backends[role]
        started = time.perf_counter()
        completion = await within(backend.complete(messages, sampling), self.backend_cfgs[role].timeout_s)
        if reject_blank and not completion.text.strip():
            raise EmptyAnswer(f"{backend.model_name} returned a blank answer ({completion.finish_reason})")
        if completion.ttft_s is not None:
            self.metrics.time_to_first_token.labels(role).observe(completion.ttft_s)
        return Outcome(
            text=completion.text,
            finish_reason=completion.finish_reason,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            answered_by=role,
            model=backend.model_name,
            fallback=None,
            generation_s=time.perf_counter() - started,
        )

    async def _with_fallback(self, role: str, allow_fallback: bool, attempt: Any) -> Any:
        """``await attempt(role, reject_blank)``; if the student fails and fallback applies, the teacher's attempt,
        marked with the reason. A blank answer is a failure only where the teacher can still step in."""
        try:
            return await attempt(role, role == "student")
        except Exception as exc:
            reason = self._record_failure(role, exc)
            if not self._may_fall_back(role, reason, allow_fallback):
                raise GenerationFailed(f"{role} ({self.model_name(role)}) failed: {_describe(exc)}",
                                       timed_out=reason == "timeout") from exc
            self.metrics.fallbacks.labels(reason).inc()
            try:
                result = await attempt("teacher", False)
            except Exception as teacher_exc:
                teacher_reason = self._record_failure("teacher", teacher_exc)
                raise GenerationFailed(
                    f"student {reason} ({_describe(exc)}), then teacher {teacher_reason} ({_describe(teacher_exc)})",
                    timed_out=teacher_reason == "timeout",
                ) from teacher_exc
            result.fallback = FallbackInfo(from_model="student", reason=reason, detail=_describe(exc))
            return result

    async def complete(
        self, role: str, messages: list[Message], sampling: SamplingConfig, allow_fallback: bool = True
    ) -> Outcome:
        """The whole answer from ``role``, or from the teacher when the student fails and fallback applies."""

        async def attempt(who: str, reject_blank: bool) -> Outcome:
            return await self._complete_once(who, messages, sampling, reject_blank=reject_blank)

        outcome = await self._with_fallback(role, allow_fallback, attempt)
        self._record_success(outcome.answered_by, outcome.prompt_tokens, outcome.completion_tokens, outcome.generation_s)
        return outcome

    async def _open_once(
        self, role: str, messages: list[Message], sampling: SamplingConfig, reject_blank: bool
    ) -> StreamHandle:
        """Start ``role``'s stream and read up to its first non-blank chunk (or, for the teacher, its end)."""
        backend = self.backends[role]
        timeout_s = self.backend_cfgs[role].timeout_s
        started = time.perf_counter()
        stream = aiter(backend.stream(messages, sampling))
        head: list[Chunk] = []
        try:
            while True:
                chunk = await _next_chunk(stream, timeout_s)
                if chunk is None:
                    raise BackendError(f"{backend.model_name} ended its stream without finishing the answer")
                head.append(chunk)
                if chunk.text.strip():
                    break
                if chunk.finish_reason:  # finished, and every chunk so far was blank
                    if reject_blank:
                        raise EmptyAnswer(f"{backend.model_name} returned a blank answer")
                    break
        except BaseException:
            await _close(stream)
            raise
        self.metrics.time_to_first_token.labels(role).observe(time.perf_counter() - started)
        return StreamHandle(role, backend.model_name, None, head, stream, timeout_s, started)

    async def open_stream(
        self, role: str, messages: list[Message], sampling: SamplingConfig, allow_fallback: bool = True
    ) -> StreamHandle:
        """An answer stream from ``role``, switched to the teacher if the student fails before its first token."""

        async def attempt(who: str, reject_blank: bool) -> StreamHandle:
            return await self._open_once(who, messages, sampling, reject_blank=reject_blank)

        return await self._with_fallback(role, allow_fallback, attempt)

    async def iterate(self, handle: StreamHandle) -> AsyncIterator[Chunk]:
        """All chunks of an opened stream; raises (BackendError/TimeoutError) if the model fails mid-answer."""
        last: Chunk | None = None
        try:
            for chunk in handle.head:
                last = chunk
                yield chunk
            while last is None or last.finish_reason is None:
                chunk = await _next_chunk(handle.rest, handle.timeout_s)
                if chunk is None:
                    break
                last = chunk
                yield chunk
        except Exception as exc:
            self._record_failure(handle.answered_by, exc)
            raise
        finally:
            await _close(handle.rest)
        if last is not None and last.finish_reason:
            self._record_success(handle.answered_by, last.prompt_tokens or 0, last.completion_tokens or 0,
                                 time.perf_counter() - handle.started)


__all__ = [
    "BackendError",
    "ConcurrencyLimiter",
    "GenerationFailed",
    "NotReady",
    "Outcome",
    "Overloaded",
    "RoutedService",
    "StreamHandle",
]
