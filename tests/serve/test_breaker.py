"""The circuit breaker's state machine (on a clock the test moves) and the prober feeding it from real probes."""

from __future__ import annotations

import asyncio

from serve.breaker import CircuitBreaker, HealthProber


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, changes: list | None = None) -> CircuitBreaker:
    return CircuitBreaker("student", failure_threshold=3, open_s=10.0, clock=clock,
                          on_change=(lambda name, state: changes.append(state)) if changes is not None else None)


def test_opens_after_consecutive_failures_and_a_success_resets_the_count():
    b = breaker(Clock())
    b.record_failure("boom")
    b.record_failure("boom")
    b.record_success()
    b.record_failure("boom")
    b.record_failure("boom")
    assert b.state == "closed" and b.allow()
    b.record_failure("third in a row")
    assert b.state == "open" and not b.allow()
    assert b.describe() == {"circuit": "open", "consecutive_failures": 3, "last_error": "third in a row"}


def test_half_open_lets_one_trial_through_after_open_s():
    clock, changes = Clock(), []
    b = breaker(clock, changes)
    b.record_failure("down", at_once=True)
    clock.now += 9.9
    assert not b.allow()
    clock.now += 0.2
    assert b.allow() and b.state == "half_open"
    assert not b.allow()  # one trial at a time
    b.record_failure("still down")
    assert b.state == "open" and not b.allow()
    clock.now += 10
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.allow() and b.allow()
    assert changes == ["open", "half_open", "open", "half_open", "closed"]


def test_a_trial_that_never_reports_does_not_wedge_the_circuit():
    clock = Clock()
    b = breaker(clock)
    b.record_failure("down", at_once=True)
    clock.now += 10
    assert b.allow()  # the trial's request is cancelled and never reports back
    clock.now += 10
    assert b.allow()


def test_probes_open_and_close_the_circuit():
    up = {"student": False}

    async def probe(role: str) -> None:
        if not up[role]:
            raise ConnectionError("connection refused")

    async def run() -> list[str]:
        b = CircuitBreaker("student", failure_threshold=3, open_s=60.0)
        prober = HealthProber({"student": b}, probe, interval_s=0.01, timeout_s=1.0)
        states = []
        assert not await prober.probe_once("student")
        states.append(b.state)
        up["student"] = True
        assert await prober.probe_once("student")
        states.append(b.state)
        return states

    assert asyncio.run(run()) == ["open", "closed"]


def test_a_passing_probe_does_not_close_a_circuit_that_requests_opened():
    async def probe(role: str) -> None:
        return None

    async def run() -> str:
        b = CircuitBreaker("student", failure_threshold=1, open_s=60.0)
        b.record_failure("generation timed out")
        await HealthProber({"student": b}, probe, interval_s=1, timeout_s=1).probe_once("student")
        return b.state

    assert asyncio.run(run()) == "open"


def test_a_hanging_probe_counts_as_down():
    async def hang(role: str) -> None:
        await asyncio.Event().wait()

    async def run() -> str:
        b = CircuitBreaker("teacher", failure_threshold=3, open_s=60.0)
        await HealthProber({"teacher": b}, hang, interval_s=1, timeout_s=0.05).probe_once("teacher")
        return b.state

    assert asyncio.run(run()) == "open"
