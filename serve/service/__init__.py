"""The routed service behind the HTTP layer: prepare (RAG) -> route -> generate with timeout and fallback.

:class:`RoutedService` owns the lifecycle (loading the router, both models and the RAG pipeline; readiness;
shutdown) and hands each step to the part that owns it, each a module a reader takes in at once:

- :mod:`serve.service.routing`: which model answers (router, forced choice, cascade rule);
- :mod:`serve.service.fallback`: when the teacher takes over from a failing student, and what may be asked of
  every model that could answer (``fit_prompt``);
- :mod:`serve.service.answers` / :mod:`serve.service.streaming`: whole and streamed answers;
- :mod:`serve.service.models`: the two engines, their settings and circuit breakers;
- :mod:`serve.service.recording`: the metrics of all of the above; :mod:`serve.service.limiter`: admission;
- :mod:`serve.service.outcomes`: what they return and how they fail (no HTTP here: :mod:`serve.errors` maps it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from ragroute.engines.base import Chunk, Message, SamplingConfig
from ragroute.errors import UserError
from ragroute.routing import RouteDecision, RoutingPolicy
from ragroute.system import Resolved
from serve.config import ServeConfig
from serve.metrics import ServeMetrics
from serve.routing import expand_path, load_bundle, routing_policy
from serve.service.answers import WholeAnswers
from serve.service.fallback import Fallback
from serve.service.limiter import ConcurrencyLimiter
from serve.service.models import ModelPool
from serve.service.outcomes import (
    CascadeStep,
    GenerationFailed,
    ModelDown,
    NotReady,
    Outcome,
    Overloaded,
    StreamHandle,
    within,
)
from serve.service.recording import Recorder
from serve.service.routing import Routing
from serve.service.streaming import Streams
from serve.system import resolve_served, system_info

log = logging.getLogger("ragroute.serve")


class RoutedService:
    """Both models, the router and the RAG pipeline, with the rules that tie them together."""

    def __init__(self, cfg: ServeConfig, metrics: ServeMetrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics or ServeMetrics()
        self.recorder = Recorder(self.metrics, self.model_name)
        self.models = ModelPool(cfg, self.recorder)
        self.fallback = Fallback(cfg.fallback, self.models)
        self.routing = Routing(cfg.routing, self.fallback)
        self.answers, self.streams = WholeAnswers(self.fallback), Streams(self.fallback)
        self.systems: dict[str, Resolved] = {}
        self.sampling = cfg.sampling or SamplingConfig()  # the served system's, once resolved
        self.pipeline: Any = None
        self.limiter = ConcurrencyLimiter(cfg.limits.max_concurrent, cfg.limits.max_queue, self.metrics)
        self._pipeline_pool = ThreadPoolExecutor(max_workers=cfg.pipeline_workers, thread_name_prefix="rag")
        self.ready = False
        self.load_error: str | None = None
        self._probe_task: asyncio.Task | None = None

    # ---------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load the router, both models and the RAG pipeline; set ``ready`` when all are up."""
        try:
            bundle = load_bundle(self.cfg.routing)
            self.routing.policy = routing_policy(self.cfg.routing, bundle)
            self.systems = resolve_served(self.cfg, bundle)
            self.sampling = self.systems["student"].spec.sampling
            self.routing.cascade = self._load_cascade()
            await self.models.start({role: s.spec.model for role, s in self.systems.items()},
                                    self.sampling.verdict.enabled)
            if self.cfg.rag:
                await asyncio.get_running_loop().run_in_executor(self._pipeline_pool, self._load_pipeline)
            self.ready = True
            if self.cfg.health.probe_interval_s > 0:
                self._probe_task = asyncio.create_task(self.models.prober.run())
            log.info("ready: student=%s teacher=%s router=%s", self.model_name("student"),
                     self.model_name("teacher"), self.routing.policy.source)
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
        await self.models.close()
        self._pipeline_pool.shutdown(wait=False, cancel_futures=True)

    def require_ready(self) -> None:
        if not self.ready:
            raise NotReady(f"engines failed to load: {self.load_error}" if self.load_error else "engines are loading")

    def system_info(self) -> dict[str, Any] | None:
        """What /health shows of the served system (once resolved at startup)."""
        return system_info(self.cfg, self.systems) if self.systems else None

    def can_answer(self) -> bool:
        """Loaded, and at least one model's circuit is not open (the student's traffic can go to the teacher)."""
        return self.ready and self.models.can_answer()

    def backend_states(self) -> dict[str, dict[str, Any]]:
        return self.models.states()

    def model_name(self, role: str) -> str:
        return self.models.name(role)

    @property
    def router(self) -> RoutingPolicy | None:
        return self.routing.policy

    @property
    def cascade(self) -> Any:
        """The cascade rule (:class:`ragroute.cascade.CascadeRule`) when ``routing.cascade_rule`` is set."""
        return self.routing.cascade

    # ---------------------------------------------------------------------------------------- steps

    async def prepare(self, question: str) -> Any:
        """Retrieve, rerank, filter and build the prompt (``PreparedPrompt``) off the event loop."""
        if self.pipeline is None:
            raise NotReady("this server runs without the RAG pipeline (rag: false); use /v1/chat/completions")
        prepared = await asyncio.get_running_loop().run_in_executor(self._pipeline_pool, self.pipeline.prepare, question)
        self.recorder.stages(prepared.timings)
        return prepared

    def decide(self, question: str, forced: str | None, doc_scores: list[float] | None = None) -> RouteDecision:
        return self.routing.decide(question, forced, doc_scores)

    async def cascade_step(self, messages: list[Message], sampling: SamplingConfig,
                           allow_fallback: bool = True) -> CascadeStep:
        return await self.routing.cascade_step(messages, sampling, allow_fallback)

    async def fit_prompt(self, role: str, messages: list[Message], max_tokens: int, explicit: bool,
                         allow_fallback: bool = True) -> int:
        return await self.fallback.fit_prompt(role, messages, max_tokens, explicit, allow_fallback)

    async def complete(self, role: str, messages: list[Message], sampling: SamplingConfig,
                       allow_fallback: bool = True, after: Any = None) -> Outcome:
        return await self.answers.complete(role, messages, sampling, allow_fallback, after)

    async def open_stream(self, role: str, messages: list[Message], sampling: SamplingConfig,
                          allow_fallback: bool = True, after: Any = None) -> StreamHandle:
        return await self.streams.open(role, messages, sampling, allow_fallback, after)

    def iterate(self, handle: StreamHandle) -> AsyncIterator[Chunk]:
        return self.streams.iterate(handle)


__all__ = ["CascadeStep", "ConcurrencyLimiter", "GenerationFailed", "ModelDown", "NotReady", "Outcome", "Overloaded",
           "RoutedService", "StreamHandle", "within"]
