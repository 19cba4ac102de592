"""BatchingEncoder: concurrent one-item calls gathered into batches, overload, errors, close.

The logic is tested with a fake encoder whose speed and failures the test controls; one test
checks with the real MiniLM that batched vectors equal the ones encoded alone.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from retrieval.encoders.base import Encoder
from retrieval.encoders.batching import BatchingEncoder, EncoderClosed, Overloaded
from retrieval.errors import ModelUnavailable, RetrievalError

DIM = 8
WAIT = 10.0  # seconds a test waits for anything before failing instead of hanging


def vector(item: str) -> np.ndarray:
    seed = int(hashlib.md5(item.encode()).hexdigest()[:8], 16)
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class SlowEncoder:
    """A fake model: a fixed cost per call plus a cost per item, like a real forward pass.

    ``gate`` (open unless a test closes it) holds every call until the test opens it; an item named "bad"
    raises ValueError; ``fail_all`` makes every call raise."""

    modality = "text"

    def __init__(self, per_call_s: float = 0.02, per_item_s: float = 0.001):
        self.per_call_s = per_call_s
        self.per_item_s = per_item_s
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when a call starts
        self.fail_all: Exception | None = None
        self.lock = threading.Lock()

    @property
    def id(self) -> str:
        return "fake-slow"

    @property
    def dim(self) -> int:
        return DIM

    def encode(
        self, items: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        with self.lock:
            self.batches.append(len(items))
        self.entered.set()
        assert self.gate.wait(WAIT)
        time.sleep(self.per_call_s + self.per_item_s * len(items))
        if self.fail_all is not None:
            raise self.fail_all
        if "bad" in items:
            raise ValueError("cannot encode 'bad'")
        return np.stack([vector(x) for x in items]) if items else np.zeros((0, DIM), np.float32)


def held(
    enc: SlowEncoder, batching: BatchingEncoder, pool: ThreadPoolExecutor, first: str
) -> Future[np.ndarray]:
    """Occupy the worker with a call of ``first`` held at the gate; returns its future."""
    enc.gate.clear()
    enc.entered.clear()
    fut = pool.submit(batching.encode, [first])
    assert enc.entered.wait(WAIT)
    return fut


def wait_queued(batching: BatchingEncoder, n: int) -> None:
    deadline = time.monotonic() + WAIT
    while batching.stats().queued < n:
        assert time.monotonic() < deadline, "callers did not queue"
        time.sleep(0.001)


def test_it_is_an_encoder_and_reads_through() -> None:
    enc = SlowEncoder(0, 0)
    with BatchingEncoder(enc) as b:
        assert isinstance(b, Encoder)
        assert b.id == "fake-slow" and b.dim == DIM and b.modality == "text"
        assert b.inner is enc
        out = b.encode(["hello"])
        assert out.shape == (1, DIM) and out.dtype == np.float32
        np.testing.assert_array_equal(out[0], vector("hello"))


def test_32_threads_get_their_own_vectors_in_batches() -> None:
    enc = SlowEncoder(per_call_s=0.01, per_item_s=0.0005)
    with BatchingEncoder(enc, max_batch=16, max_queue=64) as b:
        start = threading.Barrier(32)

        def client(c: int) -> list[tuple[str, np.ndarray]]:
            start.wait(WAIT)
            got = []
            for i in range(10):
                item = f"client {c} question {i}"
                got.append((item, b.encode([item])))
            return got

        with ThreadPoolExecutor(32) as pool:
            results = [f.result(WAIT * 3) for f in [pool.submit(client, c) for c in range(32)]]
        for got in results:
            for item, out in got:
                assert out.shape == (1, DIM)
                np.testing.assert_array_equal(out[0], vector(item))
        stats = b.stats()
        assert stats.batched_items == 320 and sum(enc.batches) == 320
        assert max(enc.batches) > 1 and max(stats.sizes) > 1  # batching happened
        assert max(enc.batches) <= 16
        assert stats.batches < 320 / 4  # most calls shared a batch
        assert stats.refused == 0 and stats.failed_batches == 0


def test_what_piles_up_during_a_batch_goes_in_the_next_one() -> None:
    enc = SlowEncoder(0.001, 0)
    with BatchingEncoder(enc, max_batch=4, max_queue=16) as b, ThreadPoolExecutor(10) as pool:
        first = held(enc, b, pool, "first")
        rest = [pool.submit(b.encode, [f"q{i}"]) for i in range(9)]
        wait_queued(b, 9)
        enc.gate.set()
        np.testing.assert_array_equal(first.result(WAIT)[0], vector("first"))
        for i, f in enumerate(rest):
            np.testing.assert_array_equal(f.result(WAIT)[0], vector(f"q{i}"))
        assert enc.batches == [1, 4, 4, 1]


def test_a_lone_call_is_not_held_back_by_max_wait() -> None:
    enc = SlowEncoder(0, 0)
    with BatchingEncoder(enc, max_wait_ms=300) as b:
        b.encode(["warm"])
        for i in range(10):  # back to back: the next call may come before the worker idles
            t0 = time.perf_counter()
            b.encode([f"alone {i}"])
            assert time.perf_counter() - t0 < 0.1
            if i % 2:
                time.sleep(0.01)
        assert enc.batches == [1] * 11


def test_max_wait_fills_a_batch_only_when_requests_are_waiting() -> None:
    enc = SlowEncoder(0.001, 0)
    with BatchingEncoder(enc, max_batch=8, max_wait_ms=5000) as b, ThreadPoolExecutor(10) as pool:
        first = held(enc, b, pool, "first")
        waiting = [pool.submit(b.encode, [f"early {i}"]) for i in range(3)]
        wait_queued(b, 3)
        enc.gate.set()  # the next batch starts with 3 waiting and waits for more to join
        time.sleep(0.05)
        late = [pool.submit(b.encode, [f"late {i}"]) for i in range(5)]  # fills it to 8
        for f in [first, *waiting, *late]:
            f.result(WAIT)
        assert enc.batches == [1, 8]


def test_bulk_calls_and_calls_with_options_bypass_the_queue() -> None:
    enc = SlowEncoder(0, 0)
    with BatchingEncoder(enc, max_batch=4) as b:
        items = [f"doc {i}" for i in range(50)]
        out = b.encode(items)
        assert out.shape == (50, DIM)
        np.testing.assert_array_equal(out[7], vector("doc 7"))
        b.encode(["one"], progress=True)
        b.encode(["one"], batch_size=2)
        assert b.encode([]).shape == (0, DIM)
        assert enc.batches == [50, 1, 1, 0]
        stats = b.stats()
        assert stats.direct_calls == 4 and stats.batches == 0


def test_a_full_queue_refuses_at_once_with_a_retry_hint() -> None:
    enc = SlowEncoder(0.001, 0)
    with BatchingEncoder(enc, max_batch=2, max_queue=3) as b, ThreadPoolExecutor(4) as pool:
        first = held(enc, b, pool, "first")
        queued = [pool.submit(b.encode, [f"q{i}"]) for i in range(3)]
        wait_queued(b, 3)
        t0 = time.perf_counter()
        with pytest.raises(Overloaded) as info:
            b.encode(["one too many"])
        assert time.perf_counter() - t0 < 0.5
        exc = info.value
        assert isinstance(exc, RetrievalError) and exc.http_status == 503
        assert exc.retry_after_s > 0 and int(exc.retry_after_header) >= 1
        enc.gate.set()
        for i, f in enumerate(queued):
            np.testing.assert_array_equal(f.result(WAIT)[0], vector(f"q{i}"))
        first.result(WAIT)
        assert b.stats().refused == 1
        np.testing.assert_array_equal(b.encode(["later"])[0], vector("later"))  # open again


def test_an_item_that_fails_fails_only_its_caller() -> None:
    enc = SlowEncoder(0.001, 0)
    with BatchingEncoder(enc, max_batch=8) as b, ThreadPoolExecutor(8) as pool:
        first = held(enc, b, pool, "first")
        names = ["a", "bad", "c", "d"]
        futs = [pool.submit(b.encode, [n]) for n in names]
        wait_queued(b, 4)
        enc.gate.set()
        first.result(WAIT)
        for n, f in zip(names, futs, strict=True):
            if n == "bad":
                with pytest.raises(ValueError, match="cannot encode 'bad'"):
                    f.result(WAIT)
            else:
                np.testing.assert_array_equal(f.result(WAIT)[0], vector(n))
        assert enc.batches[:2] == [1, 4]  # the batch, then each item alone
        np.testing.assert_array_equal(b.encode(["after"])[0], vector("after"))  # worker alive


def test_a_model_failure_reaches_exactly_the_callers_of_that_batch() -> None:
    enc = SlowEncoder(0.001, 0)
    with BatchingEncoder(enc, max_batch=3) as b, ThreadPoolExecutor(8) as pool:
        first = held(enc, b, pool, "first")
        in_batch = [pool.submit(b.encode, [f"x{i}"]) for i in range(3)]
        wait_queued(b, 3)
        enc.fail_all = ModelUnavailable("the model is gone")
        enc.gate.set()
        with pytest.raises(ModelUnavailable):
            first.result(WAIT)
        for f in in_batch:
            with pytest.raises(ModelUnavailable, match="the model is gone"):
                f.result(WAIT)
        assert enc.batches == [1, 3]  # a ConfigError is the model's: not retried item by item
        enc.fail_all = None
        np.testing.assert_array_equal(b.encode(["next"])[0], vector("next"))
        assert b.stats().failed_batches == 2


def test_a_wrong_shape_from_the_model_is_an_error_not_a_wrong_vector() -> None:
    class Short(SlowEncoder):
        def encode(
            self, items: Sequence[str], *, batch_size: int | None = None, progress: bool = False
        ) -> np.ndarray:
            return super().encode(items)[:1]

    enc = Short(0.001, 0)
    with BatchingEncoder(enc, max_batch=4, isolate_errors=False) as b:
        with ThreadPoolExecutor(4) as pool:
            first = held(enc, b, pool, "first")
            futs = [pool.submit(b.encode, [f"q{i}"]) for i in range(3)]
            wait_queued(b, 3)
            enc.gate.set()
            first.result(WAIT)
            for f in futs:
                with pytest.raises(ValueError, match="returned shape"):
                    f.result(WAIT)


def test_close_releases_every_waiter_and_refuses_new_calls() -> None:
    enc = SlowEncoder(0.001, 0)
    b = BatchingEncoder(enc, max_batch=2)
    with ThreadPoolExecutor(6) as pool:
        running = held(enc, b, pool, "running")
        queued = [pool.submit(b.encode, [f"q{i}"]) for i in range(5)]
        wait_queued(b, 5)
        t0 = time.perf_counter()
        b.close(timeout=0.2)  # the running call is stuck at the gate past the timeout
        assert time.perf_counter() - t0 < 2
        for f in [running, *queued]:
            with pytest.raises(EncoderClosed):
                f.result(WAIT)
        with pytest.raises(EncoderClosed):
            b.encode(["after close"])
        with pytest.raises(EncoderClosed):
            b.encode(["bulk", "after close"])
        enc.gate.set()
    b._worker.join(WAIT)
    assert not b._worker.is_alive()
    b.close()  # idempotent


def test_close_lets_the_running_batch_finish() -> None:
    enc = SlowEncoder(0.001, 0)
    b = BatchingEncoder(enc)
    with ThreadPoolExecutor(2) as pool:
        running = held(enc, b, pool, "running")
        threading.Timer(0.1, enc.gate.set).start()
        b.close(timeout=WAIT)
        np.testing.assert_array_equal(running.result(WAIT)[0], vector("running"))
    assert not b._worker.is_alive()


def test_settings_are_checked() -> None:
    enc = SlowEncoder(0, 0)
    with pytest.raises(ValueError):
        BatchingEncoder(enc, max_batch=0)
    with pytest.raises(ValueError):
        BatchingEncoder(enc, max_wait_ms=-1)
    with pytest.raises(ValueError):
        BatchingEncoder(enc, max_queue=0)


@pytest.mark.models
def test_minilm_batched_vectors_equal_vectors_encoded_alone() -> None:
    from retrieval.encoders import text_encoder
    from retrieval.settings import load_settings

    enc = text_encoder(load_settings(None, device="cpu"))
    questions = [
        "where is my parcel",
        "can I return shoes that do not fit?",
        "do you ship to Norway",
        "refund",
        "how long does delivery take for a large sofa ordered on a Sunday evening?",
        "my card was charged twice for order 1234",
        "is the blue jacket waterproof",
        "change the delivery address",
    ] * 2
    alone = np.concatenate([enc.encode([q]) for q in questions])
    with BatchingEncoder(enc, max_batch=16) as b:
        start = threading.Barrier(len(questions))

        def ask(q: str) -> np.ndarray:
            start.wait(WAIT)
            return b.encode([q])

        with ThreadPoolExecutor(len(questions)) as pool:
            batched = np.concatenate(
                [f.result(120) for f in [pool.submit(ask, q) for q in questions]]
            )
        stats = b.stats()
    assert max(stats.sizes) > 1, stats
    # float32: the same vectors; bfloat16 (the default on CPUs with AMX) rounds sums in
    # another order for another batch shape: within 1e-3 cosine (rankings move only at ties)
    if enc.dtype == "float32":
        np.testing.assert_allclose(batched, alone, atol=1e-5)
    assert np.min(np.sum(batched * alone, axis=1)) > 0.999
    # and a whole batch as one call, as the worker makes it
    whole = enc.encode(questions[:8])
    if enc.dtype == "float32":
        np.testing.assert_allclose(whole, alone[:8], atol=1e-5)
    assert np.min(np.sum(whole * alone[:8], axis=1)) > 0.999
