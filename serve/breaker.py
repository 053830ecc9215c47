"""Whether each model can answer now: a circuit breaker per model, fed by failed generations and by periodic
health probes, so that a model that is down costs requests nothing (no ``timeout_s`` wait per request).

States: ``closed`` (requests go to the model), ``open`` (the model is down; the student's traffic goes straight
to the teacher, the teacher's fails fast with 503), ``half_open`` (after ``open_s``, one trial request is let
through: success closes the circuit, failure opens it again). ``failure_threshold`` consecutive failed
generations open it, and only a trial request closes it again (a model that answers probes but fails requests
stays out); a failed probe opens it at once, and a circuit a probe opened, a passing probe closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("ragroute.serve")

STATES = ("closed", "half_open", "open")  # the index is the value of the ragroute_circuit_state gauge


class CircuitBreaker:
    def __init__(self, name: str, failure_threshold: int, open_s: float,
                 on_change: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.failure_threshold, self.open_s = name, failure_threshold, open_s
        self.state = "closed"
        self.failures = 0
        self.last_error: str | None = None
        self._opened_at = 0.0
        self._trial_at: float | None = None
        self.opened_by_probe = False
        self._on_change = on_change
        self._clock = clock

    def _set(self, state: str) -> None:
        if state != self.state:
            log.warning("%s circuit %s -> %s%s", self.name, self.state, state,
                        f" ({self.last_error})" if state == "open" and self.last_error else "")
            self.state = state
            if self._on_change is not None:
                self._on_change(self.name, state)

    def allow(self) -> bool:
        """May a request go to this model now? In ``half_open`` one trial per ``open_s`` (a trial whose request
        is cancelled never reports back, so the next one is let through after another ``open_s``)."""
        now = self._clock()
        if self.state == "closed":
            return True
        if self.state == "open" and now - self._opened_at >= self.open_s:
            self._set("half_open")
            self._trial_at = None
        if self.state == "half_open" and (self._trial_at is None or now - self._trial_at >= self.open_s):
            self._trial_at = now
            return True
        return False

    def record_success(self) -> None:
        self.failures = 0
        self._set("closed")

    def record_failure(self, detail: str, at_once: bool = False) -> None:
        """A failed generation (or, ``at_once``, a failed probe)."""
        self.failures += 1
        self.last_error = detail
        if at_once or self.state == "half_open" or self.failures >= self.failure_threshold:
            self.opened_by_probe = at_once
            self._opened_at = self._clock()
            self._set("open")

    def describe(self) -> dict[str, Any]:
        return {"circuit": self.state, "consecutive_failures": self.failures, "last_error": self.last_error}


class HealthProber:
    """Probes each model every ``interval_s`` (``probe(role)`` raises when the model is down) and feeds its
    breaker: a failing probe opens the circuit, a passing one closes a circuit that a probe opened."""

    def __init__(self, breakers: dict[str, CircuitBreaker], probe: Callable[[str], Awaitable[None]],
                 interval_s: float, timeout_s: float) -> None:
        self.breakers, self.probe, self.interval_s, self.timeout_s = breakers, probe, interval_s, timeout_s
        self.last_probe: dict[str, float] = {}

    async def probe_once(self, role: str) -> bool:
        breaker = self.breakers[role]
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.probe(role)
        except Exception as exc:
            breaker.record_failure(f"health probe failed: {str(exc) or type(exc).__name__}", at_once=True)
            return False
        finally:
            self.last_probe[role] = time.monotonic()
        if breaker.state != "closed" and breaker.opened_by_probe:
            breaker.record_success()
        return True

    async def run(self) -> None:
        """Probe all models forever (cancel the task to stop)."""
        while True:
            await asyncio.gather(*(self.probe_once(role) for role in self.breakers))
            await asyncio.sleep(self.interval_s)
