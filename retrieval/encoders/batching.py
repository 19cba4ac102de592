"""Dynamic batching: gather concurrent one-item ``encode([x])`` calls into one model batch.

Every query encodes its question alone (:meth:`Retriever.query`), and every model call runs
on the one model thread (:func:`~retrieval.encoders.base.on_model_thread`), so concurrent
requests queue up behind each other one encoding at a time, although a model encodes a
batch of 8 short questions about twice as fast per question as one at a time. Inference
servers (Triton's dynamic batching, text-embeddings-inference) gather concurrent requests
into one batch; :class:`BatchingEncoder` does the same inside this process.

It wraps any :class:`~retrieval.encoders.base.Encoder` and has the same protocol. One worker
thread takes the calls that piled up while the previous batch ran (at most ``max_batch``)
and encodes them in one call of the wrapped encoder:

* a lone call is never held back: when the worker is idle it dispatches at once; only when
  requests arrived while the previous batch ran may it wait up to ``max_wait_ms`` (default
  2) for the next batch to fill;
* calls with several items (a bulk encode during ingest, ``query_batch``) or with options
  (``batch_size``, ``progress``) go straight to the wrapped encoder;
* the queue is bounded: past ``max_queue`` waiting calls, :class:`Overloaded` is raised at
  once (HTTP 503 with ``Retry-After: retry_after_s``) instead of latency growing without
  limit;
* every caller gets exactly the row of the wrapped encoder's output for its item; when a
  batch fails, its items are encoded again one by one, so an exception reaches exactly the
  callers whose item raises it (all of them when the model itself fails), and the worker
  goes on;
* :meth:`BatchingEncoder.close` refuses new calls and fails waiting ones with
  :class:`EncoderClosed`; nothing waits for ever and nothing polls.

Text and photos are batched separately by wrapping each encoder.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, Unavailable
from . import base
from .base import Encoder

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_WAIT_MS",
    "BatchingEncoder",
    "BatchStats",
    "EncoderClosed",
    "Overloaded",
]

log = logging.getLogger(__name__)

# Measured with MiniLM on the 2-core machine, one torch thread, 8 and 32 client threads
# calling encode([question]) in a loop: throughput grows with the batch up to about 16
# short questions and hardly beyond (32 clients: 3.5x direct with 16, 2.8x with 8, no gain
# with 32 but a worse p95); a cap of 16 also keeps one batch short, so a request arriving
# just after a batch started does not wait long behind it.
DEFAULT_MAX_BATCH = 16
# Waiting applies only when requests piled up while the previous batch ran (a lone caller
# never waits). With 8 clients the batches otherwise alternate between two halves of the
# clients (mean batch 4); 2 ms lets the callers just answered join (mean 6.6): 7-25 % more
# throughput and a lower p50 in three runs, p95 unchanged; no effect with 1 or 32 clients.
DEFAULT_MAX_WAIT_MS = 2.0
# Two full batches waiting: a request waits at most ~3 batch times before it is answered;
# beyond that, refusing (503 + Retry-After) is kinder than answering seconds late. (POST
# /v1/query admits at most query_concurrency questions at once, 16 by default, and refuses
# beyond its own waiting line, service/admission.py; this bound holds the other callers, such
# as the Rasa actions, which run in their own threads.)
DEFAULT_MAX_QUEUE = 32

_EWMA = 0.2  # weight of the newest batch in the running estimate of a batch's duration


class Overloaded(Unavailable):
    """The encoder's queue is full: the service answers 503 with ``Retry-After``."""

    http_status = 503

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` in whole seconds (at least 1), as HTTP wants it."""
        return str(max(1, math.ceil(self.retry_after_s)))


class EncoderClosed(Unavailable):
    """The batching encoder was closed (the service is shutting down)."""

    http_status = 503


@dataclass
class BatchStats:
    """Counters of one :class:`BatchingEncoder` (a snapshot from :meth:`BatchingEncoder.stats`)."""

    batches: int = 0
    batched_items: int = 0
    direct_calls: int = 0  # calls that went straight to the wrapped encoder
    refused: int = 0  # Overloaded
    failed_batches: int = 0
    sizes: Counter[int] = field(default_factory=Counter)  # batch size -> how many batches
    queued: int = 0  # waiting now
    batch_s: float = 0.0  # running estimate of one batch's duration

    @property
    def mean_batch(self) -> float:
        return self.batched_items / self.batches if self.batches else 0.0


class _Request:
    __slots__ = ("future", "item")

    def __init__(self, item: Any):
        self.item = item
        self.future: Future[np.ndarray] = Future()


def _resolve(fut: Future[np.ndarray], value: np.ndarray | None, exc: BaseException | None) -> None:
    """Set a future once; a later setter (close() raced the worker) is ignored."""
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)  # type: ignore[arg-type]
    except InvalidStateError:
        pass


class BatchingEncoder:
    """An :class:`Encoder` that encodes concurrent one-item calls of ``inner`` in batches.

    ``max_batch``: most items in one batch; ``max_wait_ms``: longest wait for a batch to
    fill, only when requests were already waiting as the previous batch ended (a lone
    request never waits); ``max_queue``: most calls waiting before :class:`Overloaded`;
    ``isolate_errors``: when a batch fails, encode its items one by one so only the callers
    whose item fails get the exception (a :class:`~retrieval.errors.ConfigError`, such as a
    model that cannot load, goes to the whole batch at once).
    """

    def __init__(
        self,
        inner: Encoder,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        max_queue: int = DEFAULT_MAX_QUEUE,
        isolate_errors: bool = True,
        name: str | None = None,
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self._inner = inner
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.isolate_errors = isolate_errors
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._idle_wait = False  # the worker sleeps on an empty queue
        self._fill_wait = False  # the worker waits for a batch to fill
        self._piled = False  # requests arrived while the last batch ran
        self._running: list[_Request] = []
        self._stats = BatchStats()
        self._name = name or getattr(inner, "modality", None) or "encoder"
        self._worker = threading.Thread(
            target=self._run, name=f"batching-{self._name}", daemon=True
        )
        self._worker.start()

    # the Encoder protocol -------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def dim(self) -> int:
        return self._inner.dim

    @property
    def inner(self) -> Encoder:
        return self._inner

    def __getattr__(self, name: str) -> Any:
        # other attributes of the wrapped encoder (modality, folder, ...) read through
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def encode(
        self, items: Sequence[Any], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        if self._closed:
            raise EncoderClosed(f"the {self._name} encoder is closed")
        if (
            len(items) != 1
            or batch_size is not None
            or progress
            or threading.get_ident() in (self._worker.ident, base._model_thread_id)
        ):
            # bulk work (and a call from the worker or the model thread, which would wait
            # on itself) goes straight through
            with self._cond:
                self._stats.direct_calls += 1
            return self._inner.encode(items, batch_size=batch_size, progress=progress)
        request = _Request(items[0])
        with self._cond:
            if self._closed:
                raise EncoderClosed(f"the {self._name} encoder is closed")
            if len(self._queue) >= self.max_queue:
                self._stats.refused += 1
                raise Overloaded(
                    f"too many questions at once ({len(self._queue)} waiting for the "
                    f"{self._name} encoder); please retry shortly",
                    self._drain_estimate_s(),
                )
            self._queue.append(request)
            if self._idle_wait or (self._fill_wait and len(self._queue) >= self.max_batch):
                self._cond.notify()
        return request.future.result()

    # control --------------------------------------------------------------------------

    def stats(self) -> BatchStats:
        with self._cond:
            s = self._stats
            return BatchStats(
                s.batches,
                s.batched_items,
                s.direct_calls,
                s.refused,
                s.failed_batches,
                Counter(s.sizes),
                len(self._queue),
                s.batch_s,
            )

    def close(self, timeout: float | None = 5.0) -> None:
        """Refuse new calls, fail waiting ones with :class:`EncoderClosed`, and wait up to
        ``timeout`` seconds for the batch in progress (its callers get their vectors); if it
        is still running then, its callers get :class:`EncoderClosed` too. Idempotent."""
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        closed = EncoderClosed(f"the {self._name} encoder is closed")
        for r in pending:
            _resolve(r.future, None, closed)
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout)
        with self._cond:
            running = list(self._running)
        for r in running:  # a batch that outlived the timeout: its callers stop waiting
            _resolve(r.future, None, closed)

    def __enter__(self) -> BatchingEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the worker -----------------------------------------------------------------------

    def _drain_estimate_s(self) -> float:
        """How long until the queue as it is now has been encoded (called under the lock)."""
        batches = math.ceil(len(self._queue) / self.max_batch) + 1  # + the running one
        return batches * (self._stats.batch_s or 0.05)

    def _next_batch(self) -> list[_Request] | None:
        with self._cond:
            # wait for a batch to fill only when requests piled up while the last one ran:
            # a lone caller (even one calling again right after its answer) never waits
            may_wait = self._piled and self.max_wait_s > 0
            self._piled = False
            while not self._queue and not self._closed:
                may_wait = False
                self._idle_wait = True
                self._cond.wait()
                self._idle_wait = False
            if self._closed:
                return None
            if may_wait and len(self._queue) < self.max_batch:
                deadline = time.monotonic() + self.max_wait_s
                self._fill_wait = True
                while len(self._queue) < self.max_batch and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                self._fill_wait = False
                if self._closed:
                    return None
            n = min(self.max_batch, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self._running = batch
            return batch

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._encode_batch(batch)
                with self._cond:
                    self._running = []
        except BaseException as exc:  # noqa: BLE001 - fail every caller, never leave one waiting
            log.exception("the %s batching worker stopped", self._name)
            with self._cond:
                self._closed = True
                left = self._running + list(self._queue)
                self._queue.clear()
            for r in left:
                _resolve(r.future, None, exc)

    def _encode_batch(self, batch: list[_Request]) -> None:
        t0 = time.perf_counter()
        try:
            out = np.asarray(self._inner.encode([r.item for r in batch]))
            if out.ndim != 2 or out.shape[0] != len(batch):
                raise ValueError(
                    f"the {self._name} encoder returned shape {out.shape} for {len(batch)} items"
                )
        except Exception as exc:  # noqa: BLE001 - it belongs to the callers, not the worker
            with self._cond:
                self._stats.failed_batches += 1
            if len(batch) == 1 or not self.isolate_errors or isinstance(exc, ConfigError):
                for r in batch:
                    _resolve(r.future, None, exc)
                return
            # find whose item failed: encode each alone, so the others still get their vector
            for r in batch:
                self._encode_batch([r])
            return
        dt = time.perf_counter() - t0
        with self._cond:
            s = self._stats
            s.batches += 1
            s.batched_items += len(batch)
            s.sizes[len(batch)] += 1
            s.batch_s = dt if not s.batch_s else (1 - _EWMA) * s.batch_s + _EWMA * dt
            # before the callers are answered: did others arrive while this batch ran?
            self._piled = bool(self._queue)
        for i, r in enumerate(batch):
            _resolve(r.future, out[i : i + 1].copy(), None)
