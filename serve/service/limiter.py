"""Admission: how many requests generate at once and how many may wait."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from serve.metrics import ServeMetrics
from serve.service.outcomes import Overloaded


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
