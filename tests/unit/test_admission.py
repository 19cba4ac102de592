"""The query gate: at most N questions at once, the rest in arrival order, overload refused."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from retrieval.encoders.batching import Overloaded
from retrieval.errors import RetrievalError
from retrieval.service.admission import QueryGate


def test_at_most_concurrency_calls_run_at_once_and_each_gets_its_result() -> None:
    gate = QueryGate(3, 100)
    lock = threading.Lock()
    running = peak = 0

    def work(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return i * i

    async def main() -> list[int]:
        return await asyncio.gather(*(gate.run(work, i) for i in range(12)))

    assert asyncio.run(main()) == [i * i for i in range(12)]
    assert peak == 3
    stats = gate.stats()
    assert (stats.running, stats.waiting, stats.admitted, stats.refused) == (0, 0, 12, 0)


def test_waiting_calls_are_admitted_in_arrival_order() -> None:
    gate = QueryGate(1, 100)
    order: list[int] = []

    def work(i: int) -> None:
        order.append(i)
        time.sleep(0.005)

    async def main() -> None:
        tasks = []
        for i in range(8):
            tasks.append(asyncio.create_task(gate.run(work, i)))
            await asyncio.sleep(0)  # each arrives after the one before
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert order == list(range(8))


def test_a_full_waiting_line_refuses_at_once_with_a_retry_hint() -> None:
    gate = QueryGate(1, 2, retry_after_s=1.5)
    release = threading.Event()

    def blocked() -> str:
        release.wait(5)
        return "done"

    async def main() -> list[object]:
        first = asyncio.create_task(gate.run(blocked))
        await asyncio.sleep(0.05)  # running
        waiting = [asyncio.create_task(gate.run(lambda: "waited")) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert (gate.stats().running, gate.stats().waiting) == (1, 2)
        with pytest.raises(Overloaded) as info:
            await gate.run(lambda: "refused")
        exc = info.value
        assert isinstance(exc, RetrievalError) and exc.http_status == 503
        assert exc.retry_after_header == "2" and "2 questions waiting" in str(exc)
        release.set()
        return list(await asyncio.gather(first, *waiting))

    assert asyncio.run(main()) == ["done", "waited", "waited"]
    assert (gate.stats().admitted, gate.stats().refused) == (3, 1)


def test_an_exception_reaches_its_caller_and_frees_the_place() -> None:
    gate = QueryGate(1, 0)

    def fails() -> None:
        raise ValueError("bad question")

    async def main() -> str:
        with pytest.raises(ValueError, match="bad question"):
            await gate.run(fails)
        return await gate.run(lambda: "next")  # max_waiting 0: admitted because none runs

    assert asyncio.run(main()) == "next"


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        QueryGate(0, 10)
    with pytest.raises(ValueError):
        QueryGate(1, -1)


def test_a_burst_arriving_in_one_turn_is_counted_whole() -> None:
    """Calls that passed the check but have not yet asked for a place count too: six calls
    started in the same event-loop turn against one place and no waiting line admit one."""
    gate = QueryGate(1, 0)

    async def main() -> list[object]:
        tasks = [asyncio.create_task(gate.run(time.sleep, 0.05)) for _ in range(6)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    assert sum(isinstance(r, Overloaded) for r in results) == 5
    assert (gate.stats().admitted, gate.stats().refused, gate.stats().waiting) == (1, 5, 0)


def test_a_call_cancelled_while_waiting_gives_its_place_in_line_back() -> None:
    gate = QueryGate(1, 1)
    release = threading.Event()

    async def main() -> str:
        first = asyncio.create_task(gate.run(release.wait, 5))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(gate.run(lambda: "never"))
        await asyncio.sleep(0.05)
        assert gate.stats().waiting == 1
        waiting.cancel()  # a deadline (asyncio.wait_for) or a caller that went away
        await asyncio.gather(waiting, return_exceptions=True)
        assert gate.stats().waiting == 0
        late = asyncio.create_task(gate.run(lambda: "admitted"))  # the line has room again
        await asyncio.sleep(0.05)
        release.set()
        await first
        return await late

    assert asyncio.run(main()) == "admitted"
