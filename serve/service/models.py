"""The two models: their engines, settings and circuit breakers; one try on a model goes through its breaker."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ragroute.engines.base import EngineRejected, StreamingEngine
from serve.api_error import APIError
from serve.backends import create_backend
from serve.breaker import CircuitBreaker, HealthProber
from serve.config import BackendConfig, ServeConfig, shared_gpu_advice
from serve.service.outcomes import ROLES, EmptyAnswer, ModelDown, describe
from serve.service.recording import Recorder

log = logging.getLogger("ragroute.serve")

Attempt = Callable[[str, bool], Awaitable[Any]]  # (role, reject_blank) -> an Outcome or a StreamHandle


class ModelPool:
    """The student's and the teacher's engines (once started), settings and breakers, with their probes."""

    def __init__(self, cfg: ServeConfig, recorder: Recorder) -> None:
        self.cfgs: dict[str, BackendConfig] = {"student": cfg.student, "teacher": cfg.teacher}
        self.engines: dict[str, StreamingEngine] = {}
        self.recorder = recorder
        health = cfg.health
        self.breakers = {role: CircuitBreaker(role, health.failure_threshold, health.open_s,
                                              on_change=recorder.circuit) for role in ROLES}
        self.prober = HealthProber(self.breakers, self._probe, health.probe_interval_s, health.probe_timeout_s)

    async def start(self, models: dict[str, Any], verdict_first: bool) -> None:
        """Create and load both engines (``models``: each role's ModelSpec)."""
        engines = {role: create_backend(cfg, models[role]) for role, cfg in self.cfgs.items()}
        advice = shared_gpu_advice(self.cfgs["student"].engine, self.cfgs["teacher"].engine)
        if advice:
            log.warning(advice)
        self.engines = engines
        # One after the other: transformers' lazy imports are not thread-safe, and two threads importing it at
        # once fail with "cannot import name AutoTokenizer".
        for engine in engines.values():
            await engine.start()
            if verdict_first:  # an engine that cannot write verdicts fails now, not per request
                from ragroute.engines.verdict_first import verdict_ids

                await asyncio.to_thread(verdict_ids, engine)

    async def close(self) -> None:
        for engine in self.engines.values():
            try:
                await engine.close()
            except Exception as exc:  # shutting down anyway; report and carry on with the others
                log.warning("closing %s: %s", engine.model_name, exc)

    def name(self, role: str) -> str:
        return self.engines[role].model_name if role in self.engines else self.cfgs[role].name or role

    def timeout_s(self, role: str) -> float:
        return self.cfgs[role].timeout_s

    async def attempt(self, role: str, attempt: Attempt, reject_blank: bool) -> Any:
        """One try on ``role`` through its circuit breaker. Client errors and cancellations say nothing about
        the model's health; a blank answer means it is up."""
        breaker = self.breakers[role]
        if not breaker.allow():
            raise ModelDown(f"{role} ({self.name(role)}) is down: {breaker.last_error or 'circuit open'}")
        try:
            result = await attempt(role, reject_blank)
        except EngineRejected as exc:  # the model refused the request itself: the client's to fix
            breaker.record_success()
            raise APIError(400, str(exc), code="rejected_by_model") from exc
        except (EmptyAnswer, APIError):
            breaker.record_success()
            raise
        except asyncio.CancelledError:
            self.recorder.cancelled(role)
            raise
        except Exception as exc:
            breaker.record_failure(describe(exc))
            raise
        breaker.record_success()
        return result

    def can_answer(self) -> bool:
        """At least one model's circuit is not open (the student's traffic can go to the teacher)."""
        return any(b.state != "open" for b in self.breakers.values())

    def states(self) -> dict[str, dict[str, Any]]:
        """Per model: circuit state, consecutive failures, last error, seconds since the last probe."""
        now = time.monotonic()
        states = {}
        for role, breaker in self.breakers.items():
            probed = self.prober.last_probe.get(role)
            states[role] = {"model": self.name(role), **breaker.describe(),
                            "last_probe_s_ago": None if probed is None else round(now - probed, 3)}
        return states

    async def _probe(self, role: str) -> None:
        await self.engines[role].check_health()
