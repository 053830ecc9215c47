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
from dataclasses import dataclass, field, replace
from typing import Any

from ragroute.engines.base import Chunk, EngineError, EngineRejected, Message, SamplingConfig, StreamingEngine
from ragroute.errors import UserError
from ragroute.routing import RouteDecision, RoutingPolicy, retrieval_signals
from ragroute.system import Resolved
from serve.backends import create_backend
from serve.breaker import STATES, CircuitBreaker, HealthProber
from serve.config import BackendConfig, ServeConfig, shared_gpu_advice
from serve.limits import RequestRejected, fit_to_context
from serve.metrics import ServeMetrics
from serve.routing import expand_path, load_bundle, routing_policy
from serve.system import resolve_served, system_info

log = logging.getLogger("ragroute.serve")

ROLES = ("student", "teacher")


class Overloaded(Exception):
    """Every generation slot is busy and the wait queue is full (HTTP 429)."""


class NotReady(Exception):
    """The engines are still loading or failed to load (HTTP 503)."""


class ModelDown(NotReady):
    """The model's circuit is open (probes or recent generations failed): refused at once (HTTP 503)."""


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
    verdict: str | None = None  # verdict-first answers: the verdict and P(yes/no/maybe)
    verdict_probs: dict[str, float] | None = None


@dataclass
class CascadeStep:
    """Cascade mode: the student's verdict step (never sent to the client) and the rule's decision on it."""

    decision: RouteDecision
    step: Any  # the student's ragroute.engines.verdict_first.VerdictStep; None when it failed (the teacher answers)
    waste_s: float  # the step's time: thrown away when the question escalates
    fallback: FallbackInfo | None = None  # the student failed its verdict step and the teacher stepped in

    @property
    def kept(self) -> Any:
        """The verdict step the student continues (``after=``), or None when the teacher answers."""
        return None if self.decision.use_teacher else self.step

    def summary(self) -> dict[str, Any]:
        return {"escalated": self.decision.use_teacher, "score": self.decision.score,
                "threshold": self.decision.threshold, "student_verdict_probs": self.step.probs if self.step else None,
                "escalation_waste_s": self.waste_s}


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
        self.backends: dict[str, StreamingEngine] = {}
        self.router: RoutingPolicy | None = None
        self.cascade: Any = None  # ragroute.cascade.CascadeRule when routing.cascade_rule is set
        self.systems: dict[str, Resolved] = {}
        self.sampling = cfg.sampling or SamplingConfig()  # the served system's, once resolved
        self.pipeline: Any = None
        self.limiter = ConcurrencyLimiter(cfg.limits.max_concurrent, cfg.limits.max_queue, self.metrics)
        self._pipeline_pool = ThreadPoolExecutor(max_workers=cfg.pipeline_workers, thread_name_prefix="rag")
        self.ready = False
        self.load_error: str | None = None
        health = cfg.health
        self.breakers = {role: CircuitBreaker(role, health.failure_threshold, health.open_s,
                                              on_change=self._circuit_changed) for role in ROLES}
        for role in ROLES:
            self.metrics.circuit_state.labels(role).set(0)
        self.prober = HealthProber(self.breakers, self._probe, health.probe_interval_s, health.probe_timeout_s)
        self._probe_task: asyncio.Task | None = None

    # ---------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load the router, both models and the RAG pipeline; set ``ready`` when all are up."""
        try:
            bundle = load_bundle(self.cfg.routing)
            self.router = routing_policy(self.cfg.routing, bundle)
            self.systems = resolve_served(self.cfg, bundle)
            self.sampling = self.systems["student"].spec.sampling
            self.cascade = self._load_cascade()
            backends = {role: create_backend(cfg, self.systems[role].spec.model)
                        for role, cfg in self.backend_cfgs.items()}
            advice = shared_gpu_advice(self.backend_cfgs["student"].engine, self.backend_cfgs["teacher"].engine)
            if advice:
                log.warning(advice)
            self.backends = backends
            # One after the other: transformers' lazy imports are not thread-safe, and two threads importing it
            # at once fail with "cannot import name AutoTokenizer".
            for backend in backends.values():
                await backend.start()
                if self.sampling.verdict.enabled:  # an engine that cannot write verdicts fails now, not per request
                    from ragroute.engines.verdict_first import verdict_ids

                    await asyncio.to_thread(verdict_ids, backend)
            if self.cfg.rag:
                await asyncio.get_running_loop().run_in_executor(self._pipeline_pool, self._load_pipeline)
            self.ready = True
            if self.cfg.health.probe_interval_s > 0:
                self._probe_task = asyncio.create_task(self.prober.run())
            log.info("ready: student=%s teacher=%s router=%s", backends["student"].model_name,
                     backends["teacher"].model_name, self.router.source)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("startup failed: %s", self.load_error)
            raise

    def _load_cascade(self) -> Any:
        rule_path = self.cfg.routing.cascade_rule
        if not rule_path:
            return None
        if not self.sampling.verdict.enabled:
            raise UserError("routing.cascade_rule needs verdict-first answers, and the served system's sampling has "
                            "verdict.enabled: false (serve the system of verdict-first records)")
        from ragroute.cascade import load_cascade

        return load_cascade(expand_path(rule_path))

    def _load_pipeline(self) -> None:
        from ragroute.rag.pipeline import RAGPipeline

        pipeline_cfg = self.systems["student"].spec.pipeline
        if self.cfg.pipeline:  # where the indexes live and how retrieval runs: the config's, not part of the system
            from ragroute.rag.pipeline import load_pipeline_config
            from ragroute.system import EXECUTION_ONLY

            configured = load_pipeline_config(self.cfg.pipeline)
            # A built index's store and index directories are only where they are on this machine (the system's
            # identity holds the index's own: store fingerprint, model, factory); opening them checks that.
            where = EXECUTION_ONLY | ({"corpus", "index"} if configured.index else set())
            pipeline_cfg = replace(pipeline_cfg, **{k: getattr(configured, k) for k in where})
        pipeline = RAGPipeline.from_config(pipeline_cfg)
        pipeline.warmup()  # build/load the indexes now, not on the first user's request
        self.pipeline = pipeline

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
        for backend in self.backends.values():
            try:
                await backend.close()
            except Exception as exc:  # shutting down anyway; report and carry on with the others
                log.warning("closing %s: %s", backend.model_name, exc)
        self._pipeline_pool.shutdown(wait=False, cancel_futures=True)

    def require_ready(self) -> None:
        if not self.ready:
            raise NotReady(f"engines failed to load: {self.load_error}" if self.load_error else "engines are loading")

    def system_info(self) -> dict[str, Any] | None:
        """What /health shows of the served system (once resolved at startup)."""
        return system_info(self.cfg, self.systems) if self.systems else None

    def can_answer(self) -> bool:
        """Loaded, and at least one model's circuit is not open (the student's traffic can go to the teacher)."""
        return self.ready and any(b.state != "open" for b in self.breakers.values())

    def backend_states(self) -> dict[str, dict[str, Any]]:
        """Per model: circuit state, consecutive failures, last error, seconds since the last probe."""
        now = time.monotonic()
        states = {}
        for role, breaker in self.breakers.items():
            probed = self.prober.last_probe.get(role)
            states[role] = {"model": self.model_name(role), **breaker.describe(),
                            "last_probe_s_ago": None if probed is None else round(now - probed, 3)}
        return states

    def _circuit_changed(self, role: str, state: str) -> None:
        self.metrics.circuit_state.labels(role).set(STATES.index(state))

    async def _probe(self, role: str) -> None:
        await self.backends[role].check_health()

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
            decision = RoutingPolicy.forced(forced)
        else:
            assert self.router is not None
            signals = None
            if doc_scores is not None and self.cfg.routing.use_retrieval_signals and self.router.uses_signals:
                signals = retrieval_signals(doc_scores)
            decision = self.router.decide(question, signals)
        self.metrics.routed.labels(decision.role, decision.source).inc()
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
        self, role: str, messages: list[Message], sampling: SamplingConfig, reject_blank: bool, after: Any = None
    ) -> Outcome:
        backend = self.backends[role]
        started = time.perf_counter()
        completion = await within(backend.complete(messages, sampling, after), self.backend_cfgs[role].timeout_s)
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
            verdict=completion.verdict,
            verdict_probs=completion.verdict_probs,
        )

    async def _attempt(self, role: str, attempt: Any, reject_blank: bool) -> Any:
        """One try on ``role`` through its circuit breaker. Client errors and cancellations say nothing about
        the model's health; a blank answer means it is up."""
        breaker = self.breakers[role]
        if not breaker.allow():
            raise ModelDown(f"{role} ({self.model_name(role)}) is down: {breaker.last_error or 'circuit open'}")
        try:
            result = await attempt(role, reject_blank)
        except EngineRejected as exc:  # the model refused the request itself: the client's to fix
            breaker.record_success()
            raise RequestRejected(str(exc), None, "rejected_by_model") from exc
        except (EmptyAnswer, RequestRejected):
            breaker.record_success()
            raise
        except asyncio.CancelledError:
            self.metrics.cancelled.labels(role).inc()
            raise
        except Exception as exc:
            breaker.record_failure(_describe(exc))
            raise
        breaker.record_success()
        return result

    async def _with_fallback(self, role: str, allow_fallback: bool, attempt: Any) -> Any:
        """``await attempt(role, reject_blank)``; if the student fails (or its circuit is open) and fallback
        applies, the teacher's attempt, marked with the reason. A blank answer is a failure only where the
        teacher can still step in. Client errors (:class:`RequestRejected`) never fall back."""
        try:
            return await self._attempt(role, attempt, role == "student")
        except RequestRejected:
            raise
        except ModelDown as exc:
            if not self._may_fall_back(role, "error", allow_fallback):
                raise
            reason, error = "circuit_open", exc
        except Exception as exc:
            reason, error = self._record_failure(role, exc), exc
            if not self._may_fall_back(role, reason, allow_fallback):
                raise GenerationFailed(f"{role} ({self.model_name(role)}) failed: {_describe(exc)}",
                                       timed_out=reason == "timeout") from exc
        self.metrics.fallbacks.labels(reason).inc()
        try:
            result = await self._attempt("teacher", attempt, False)
        except (RequestRejected, ModelDown):
            raise
        except Exception as teacher_exc:
            teacher_reason = self._record_failure("teacher", teacher_exc)
            raise GenerationFailed(
                f"student {reason} ({_describe(error)}), then teacher {teacher_reason} ({_describe(teacher_exc)})",
                timed_out=teacher_reason == "timeout",
            ) from teacher_exc
        result.fallback = FallbackInfo(from_model="student", reason=reason, detail=_describe(error))
        return result

    async def fit_prompt(self, role: str, messages: list[Message], max_tokens: int, explicit: bool,
                         allow_fallback: bool = True) -> int:
        """``max_tokens`` checked against the context of every model that may answer (``role``, and the teacher
        if the student may fall back): the prompt counted in each model's tokens. An unrequested default shrinks
        to what the prompt leaves. Models that cannot count locally (upstreams) check on their own."""
        roles = [role] if role == "teacher" or not self._may_fall_back(role, "error", allow_fallback) else list(ROLES)
        for who in roles:
            backend = self.backends[who]
            context = backend.context_length
            if context is None:
                continue
            prompt_tokens = await asyncio.to_thread(backend.count_prompt_tokens, messages)
            max_tokens = fit_to_context(prompt_tokens, max_tokens, context, backend.model_name, explicit)
        return max_tokens

    async def complete(
        self, role: str, messages: list[Message], sampling: SamplingConfig, allow_fallback: bool = True,
        after: Any = None,
    ) -> Outcome:
        """The whole answer from ``role``, or from the teacher when the student fails and fallback applies.
        ``after``: ``role``'s verdict step already taken (the cascade's), continued rather than taken again."""

        async def attempt(who: str, reject_blank: bool) -> Outcome:
            return await self._complete_once(who, messages, sampling, reject_blank, after if who == role else None)

        outcome = await self._with_fallback(role, allow_fallback, attempt)
        self._record_success(outcome.answered_by, outcome.prompt_tokens, outcome.completion_tokens, outcome.generation_s)
        return outcome

    async def _open_once(
        self, role: str, messages: list[Message], sampling: SamplingConfig, reject_blank: bool, after: Any = None
    ) -> StreamHandle:
        """Start ``role``'s stream and read up to its first non-blank chunk (or, for the teacher, its end)."""
        backend = self.backends[role]
        timeout_s = self.backend_cfgs[role].timeout_s
        started = time.perf_counter()
        stream = aiter(backend.stream(messages, sampling, after))
        head: list[Chunk] = []
        try:
            while True:
                chunk = await _next_chunk(stream, timeout_s)
                if chunk is None:
                    raise EngineError(f"{backend.model_name} ended its stream without finishing the answer")
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
        self, role: str, messages: list[Message], sampling: SamplingConfig, allow_fallback: bool = True,
        after: Any = None,
    ) -> StreamHandle:
        """An answer stream from ``role``, switched to the teacher if the student fails before its first token.
        ``after`` as in :meth:`complete`."""

        async def attempt(who: str, reject_blank: bool) -> StreamHandle:
            return await self._open_once(who, messages, sampling, reject_blank, after if who == role else None)

        return await self._with_fallback(role, allow_fallback, attempt)

    async def _verdict_once(self, role: str, messages: list[Message], sampling: SamplingConfig) -> Any:
        return await within(self.backends[role].verdict(messages, sampling), self.backend_cfgs[role].timeout_s)

    async def cascade_step(self, messages: list[Message], sampling: SamplingConfig,
                           allow_fallback: bool = True) -> CascadeStep:
        """Cascade mode: the student's verdict step, nothing of it sent anywhere, and the rule's decision on it
        (:meth:`ragroute.cascade.CascadeRule.decide`). A student that cannot take the step (error, timeout, open
        circuit) escalates as a fallback where fallback applies."""
        assert self.cascade is not None
        started, fallback = time.perf_counter(), None
        try:
            step = await self._attempt("student", lambda who, _: self._verdict_once(who, messages, sampling), False)
            decision = self.cascade.decide(step.probs)
        except RequestRejected:
            raise
        except Exception as exc:
            reason = "circuit_open" if isinstance(exc, ModelDown) else self._record_failure("student", exc)
            if not self._may_fall_back("student", "error" if reason == "circuit_open" else reason, allow_fallback):
                raise GenerationFailed(f"student ({self.model_name('student')}) failed its verdict step: "
                                       f"{_describe(exc)}", timed_out=reason == "timeout") from exc
            self.metrics.fallbacks.labels(reason).inc()
            step, fallback = None, FallbackInfo(from_model="student", reason=reason, detail=_describe(exc))
            decision = RouteDecision(True, None, self.cascade.threshold, "cascade")
        waste_s = time.perf_counter() - started
        self.metrics.cascade.labels("escalate" if decision.use_teacher else "keep").inc()
        if decision.use_teacher:
            self.metrics.escalation_waste.observe(waste_s)
        self.metrics.routed.labels(decision.role, decision.source).inc()
        return CascadeStep(decision, step, waste_s, fallback)

    async def iterate(self, handle: StreamHandle) -> AsyncIterator[Chunk]:
        """All chunks of an opened stream; raises (EngineError/TimeoutError) if the model fails mid-answer."""
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
        except (asyncio.CancelledError, GeneratorExit):  # the client left, or the request's deadline passed
            self.metrics.cancelled.labels(handle.answered_by).inc()
            raise
        except Exception as exc:
            self._record_failure(handle.answered_by, exc)
            self.breakers[handle.answered_by].record_failure(_describe(exc))
            raise
        finally:
            await _close(handle.rest)
        if last is not None and last.finish_reason:
            self._record_success(handle.answered_by, last.prompt_tokens or 0, last.completion_tokens or 0,
                                 time.perf_counter() - handle.started)


__all__ = [
    "CascadeStep",
    "ConcurrencyLimiter",
    "GenerationFailed",
    "NotReady",
    "Outcome",
    "Overloaded",
    "RoutedService",
    "StreamHandle",
]
