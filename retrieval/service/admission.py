"""Admission to the query path: at most so many questions at once, the rest in arrival order.

Each ``POST /v1/query`` runs the query path in a worker thread. Without a gate every waiting
request had its own thread (up to the thread pool's 40), and with a fast encoder the threads
no longer queued in the encoder's batcher but contended for the 2 cores and the interpreter
lock in search and ranking, which serves them in no particular order: at 32 clients p95 was
2.6x p50, and at 64 clients throughput collapsed (docs/benchmarks.md). The gate lets
``concurrency`` questions run (by default the encoder's largest batch, so a full batch can
still form) and keeps the others waiting on the event loop, first come first served, without a
thread each. More than ``max_waiting`` waiting is overload: 503 with ``Retry-After`` at once,
instead of latency growing without limit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ..encoders.batching import Overloaded

__all__ = ["GateStats", "QueryGate"]

T = TypeVar("T")


@dataclass(frozen=True)
class GateStats:
    running: int
    waiting: int
    admitted: int
    refused: int


class QueryGate:
    """Runs blocking query calls in threads, ``concurrency`` at a time, others waiting in
    arrival order; refuses with :class:`Overloaded` when ``max_waiting`` already wait."""

    def __init__(self, concurrency: int, max_waiting: int, *, retry_after_s: float = 1.0):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_waiting < 0:
            raise ValueError("max_waiting must not be negative")
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self._limiter: anyio.CapacityLimiter | None = None  # made in the event loop
        # calls admitted and not finished (running, waiting, or between the two): counted
        # before the first await, so a burst arriving in one event-loop turn is counted whole
        self._outstanding = 0
        self._admitted = 0
        self._refused = 0

    def _gate(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.concurrency)
        return self._limiter

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a worker thread once admitted."""
        limiter = self._gate()
        if self._outstanding >= self.concurrency + self.max_waiting:
            self._refused += 1
            raise Overloaded(
                f"the service is busy ({self._outstanding - self.concurrency} questions "
                "waiting); try again shortly",
                self.retry_after_s,
            )
        self._outstanding += 1
        self._admitted += 1
        try:
            call = functools.partial(fn, *args, **kwargs)
            return await anyio.to_thread.run_sync(call, limiter=limiter)
        finally:  # done, failed, or cancelled while waiting (a timeout)
            self._outstanding -= 1

    def stats(self) -> GateStats:
        running = 0 if self._limiter is None else int(self._limiter.borrowed_tokens)
        return GateStats(
            running=running,
            waiting=max(0, self._outstanding - running),
            admitted=self._admitted,
            refused=self._refused,
        )
