"""services.common.batcher.Batcher's batch forming, on a stand-in model that records the
batches it is given (the point is the scheduling, not a model)."""

from __future__ import annotations

import asyncio
import time

from services.common.batcher import Batcher


def recording_batcher(**kwargs) -> tuple[Batcher, list[list[int]]]:
    batches: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        batches.append(list(items))
        return [i * 10 for i in items]

    return Batcher(run, name="test", **kwargs), batches


def test_a_pause_in_arrivals_ends_the_wait_for_a_fuller_batch():
    async def scenario():
        # Wide margins: a 2-core CI runner may stall the event loop for tens of ms.
        batcher, batches = recording_batcher(max_batch_size=8, max_wait_ms=3000, max_gap_ms=150)
        await batcher.start()
        try:
            started = time.perf_counter()
            assert await batcher.submit([1]) == [10]
            lone = time.perf_counter() - started

            async def later(item: int, delay: float) -> list[int]:
                await asyncio.sleep(delay)
                return await batcher.submit([item])

            # A burst (arrivals 2 ms apart) forms one batch; an arrival after a pause longer
            # than the gap starts the next.
            burst = [later(i, 0.002 * i) for i in range(2, 6)]
            outs = await asyncio.gather(*burst, later(9, 1.2))
            assert outs == [[20], [30], [40], [50], [90]]
            return lone, batches
        finally:
            await batcher.stop()

    lone, batches = asyncio.run(scenario())
    assert lone < 1.5  # the gap, not the whole 3 s of max_wait
    assert batches == [[1], [2, 3, 4, 5], [9]]


def test_without_a_gap_the_batch_waits_for_max_wait():
    async def scenario():
        batcher, batches = recording_batcher(max_batch_size=8, max_wait_ms=150)
        await batcher.start()
        try:
            started = time.perf_counter()
            await batcher.submit([1])
            return time.perf_counter() - started, batches
        finally:
            await batcher.stop()

    waited, batches = asyncio.run(scenario())
    assert waited >= 0.14 and batches == [[1]]


def test_two_workers_split_a_burst_and_run_both_halves_at_once():
    """A burst of eight becomes two batches of four, and the two run side by side: each
    waits at a barrier that only both together pass (one worker would time out there)."""
    import threading

    both = threading.Barrier(2, timeout=10)
    batches: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        batches.append(list(items))
        both.wait()
        return [i * 10 for i in items]

    async def scenario():
        batcher = Batcher(run, name="test", max_batch_size=8, max_wait_ms=200, workers=2)
        await batcher.start()
        try:
            outs = await asyncio.gather(*(batcher.submit([i]) for i in range(8)))
            return outs, batcher.idle
        finally:
            await batcher.stop()

    outs, idle = asyncio.run(scenario())
    assert outs == [[i * 10] for i in range(8)]
    assert sorted(map(sorted, batches)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert idle


def test_one_worker_keeps_a_burst_whole():
    async def scenario():
        batcher, batches = recording_batcher(max_batch_size=8, max_wait_ms=200)
        await batcher.start()
        try:
            await asyncio.gather(*(batcher.submit([i]) for i in range(8)))
            return batches
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == [list(range(8))]


def test_stopping_answers_the_batches_still_running():
    """Callers of a batch cut off by stop() hear that the service is shutting down; none is
    left waiting."""
    import threading

    from services.common.errors import NotReady

    release = threading.Event()

    def run(items: list[int]) -> list[int]:
        release.wait(10)
        return items

    async def scenario():
        batcher = Batcher(run, name="test", max_batch_size=2, workers=2)
        await batcher.start()
        calls = [asyncio.create_task(batcher.submit([i])) for i in range(4)]
        await asyncio.sleep(0.2)  # two batches running, the rest queued
        await batcher.stop()
        release.set()
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, NotReady) for o in outcomes), outcomes


def test_stopping_answers_a_batch_still_gathering():
    from services.common.errors import NotReady

    async def scenario():
        batcher, batches = recording_batcher(max_batch_size=8, max_wait_ms=5000)
        await batcher.start()
        call = asyncio.create_task(batcher.submit([1]))
        await asyncio.sleep(0.2)  # taken off the queue, waiting for company
        await batcher.stop()
        return await asyncio.wait_for(asyncio.gather(call, return_exceptions=True), 5), batches

    [outcome], batches = asyncio.run(scenario())
    assert isinstance(outcome, NotReady) and batches == []
