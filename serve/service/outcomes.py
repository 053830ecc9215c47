"""What the routed service hands back and the ways it fails, shared by its parts; nothing here knows about HTTP
(:mod:`serve.errors` maps the exceptions to status codes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ragroute.engines.base import Chunk
from ragroute.routing import RouteDecision

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
    reason: str  # error, timeout, empty, circuit_open
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


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, EmptyAnswer):
        return "empty"
    return "error"


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def within(awaitable: Any, seconds: float) -> Any:
    """``awaitable``'s result, or TimeoutError after ``seconds``. ``asyncio.timeout`` where it exists (3.11+):
    unlike ``wait_for`` before 3.12 it does not create a task, which counts once per streamed chunk."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:
        return await asyncio.wait_for(awaitable, seconds)
    async with timeout(seconds):
        return await awaitable
