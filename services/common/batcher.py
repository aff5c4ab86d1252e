"""Dynamic batching in the manner of text-embeddings-inference.

A bounded queue, one task that owns it and forms batches, and the worker thread(s) that run
the model; each item is answered on its own future. Batches form naturally while the model
is busy; `max_wait_ms` optionally holds a non-full batch a little longer, and `max_gap_ms`
ends that wait early when the arrivals pause. When the queue is full a request fails at once
with `Overloaded` (429), it never waits forever.

`workers` > 1 runs that many batches at once, each on its own thread, while the next one
forms: for models whose run is single-threaded and thread-safe (an ONNX Runtime session
with one intra-op thread), where a core per batch does more than two cores on one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from services.common import metrics
from services.common.errors import NotReady, Overloaded

logger = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - item
O = TypeVar("O")  # noqa: E741 - output


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    return len(os.sched_getaffinity(0))


def model_executor(name: str, workers: int = 1) -> ThreadPoolExecutor:
    """The thread a model runs on: loading, warm-up and every batch. One thread for torch,
    because its OpenMP pool is per calling thread: measured, a torch model first used from
    one thread and then from another ran 1.9x slower on 2 cores (two thread teams
    contending). More only for a model that says it runs batches side by side
    (`Batcher(workers=...)`)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{name}-model")


class Batcher(Generic[I, O]):
    def __init__(
        self,
        run_batch: Callable[[list[I]], Sequence[O]],
        *,
        name: str,
        max_batch_size: int = 32,
        max_wait_ms: float = 0.0,
        max_queue: int = 512,
        executor: ThreadPoolExecutor | None = None,
        max_gap_ms: float | None = None,
        workers: int = 1,
    ):
        if max_batch_size < 1 or max_queue < 1 or workers < 1:
            raise ValueError("max_batch_size, max_queue and workers must be >= 1")
        self.run_batch = run_batch
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        # Within max_wait, stop waiting once no item has come for this long: a burst (the
        # replies of one batch coming back as the next requests) is gathered whole, while a
        # lone request waits only this gap. None or 0: wait the whole max_wait.
        self.max_gap = max_gap_ms / 1000.0 if max_gap_ms else None
        self.max_queue = max_queue
        self._queue: asyncio.Queue[tuple[I, asyncio.Future, float]] | None = None
        self._task: asyncio.Task | None = None
        self._busy = False  # a batch is forming or on a model thread
        # By default one batch at a time: the model itself uses the cores (intra-op
        # threads), and two concurrent batches would only contend for them.
        self.workers = workers
        self._slots: asyncio.Semaphore | None = None
        self._free = workers  # workers with no batch
        self._carry: list = []  # gathered items left to the next worker (_share)
        self._forming: list = []  # the batch being gathered (stop() answers its callers)
        self._running: dict[asyncio.Task, list] = {}  # batch task -> its futures
        self._executor = executor or model_executor(name, workers)
        self._m_depth = metrics.QUEUE_DEPTH.labels(name)
        self._m_batch = metrics.BATCH_SIZE.labels(name)
        self._m_queue_s = metrics.QUEUE_SECONDS.labels(name)
        self._m_infer_s = metrics.INFERENCE_SECONDS.labels(name)
        self._m_rejected = metrics.REJECTED.labels(name)
        self._m_dropped = metrics.DROPPED.labels(name)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch running: a retired batcher can stop."""
        return (
            not self._busy
            and not self._running
            and not self._carry
            and (self._queue is None or self._queue.empty())
        )

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._slots = asyncio.Semaphore(self.workers)
        self._task = asyncio.create_task(self._loop(), name=f"{self.name}-batcher")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._running) if t]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Fail whatever is still queued or was running rather than leaving callers hanging.
        stranded = [fut for futures in self._running.values() for fut in futures]
        stranded += [fut for _, fut, _ in self._carry + self._forming]
        for fut in stranded:
            if not fut.done():
                fut.set_exception(NotReady("service is shutting down"))
        self._running.clear()
        self._carry, self._forming = [], []
        while self._queue and not self._queue.empty():
            _, fut, _ = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(NotReady("service is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, items: Sequence[I]) -> list[O]:
        """Queue `items` (all or none) and wait for their outputs, in order."""
        if not self.running or self._queue is None:
            raise NotReady("model is not loaded")
        if self._queue.qsize() + len(items) > self.max_queue:
            self._m_rejected.inc()
            raise Overloaded(f"queue full ({self.max_queue} items); retry later")
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        futures = []
        for item in items:
            fut = loop.create_future()
            self._queue.put_nowait((item, fut, now))
            futures.append(fut)
        self._m_depth.set(self._queue.qsize())
        try:
            return list(await asyncio.gather(*futures))
        except asyncio.CancelledError:
            for f in futures:  # client went away: the loop skips these
                f.cancel()
            raise

    async def _loop(self) -> None:
        assert self._queue is not None and self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            # A free worker first, then the batch's first item: with one worker the next
            # batch gathers while this one runs, as in a plain loop.
            await self._slots.acquire()
            self._free -= 1
            try:
                if self._carry:  # the share of the last batch left for this worker
                    batch, self._carry = self._carry, []
                    batch = self._take_queued(batch)
                else:
                    batch = self._forming = [await self._queue.get()]
                    self._busy = True  # a batch is forming: not idle while it waits for more
                    batch = await self._gather(batch)
                batch = self._share(batch)
            except BaseException:
                self._free += 1
                self._slots.release()
                raise
            finally:
                self._busy = False
            self._forming = []  # (left set when cancelled: stop() answers its callers)
            task = asyncio.create_task(self._run_one(batch, loop))
            self._running[task] = [fut for _, fut, _ in batch]
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.pop(task, None)
        assert self._slots is not None
        self._free += 1
        self._slots.release()

    def _share(self, batch: list) -> list:
        """With idle workers beside this one, keep an even share of `batch` and leave the
        rest to them: a burst of requests becomes one batch per worker, not one batch that
        keeps a single core busy while the others wait."""
        if self._free <= 0 or len(batch) < 2:
            return batch
        keep = -(-len(batch) // (self._free + 1))
        self._carry = batch[keep:]
        return batch[:keep]

    def _take_queued(self, batch: list) -> list:
        """Fill `batch` with what is queued now, without waiting."""
        assert self._queue is not None
        while len(batch) < self.max_batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        self._m_depth.set(self._queue.qsize())
        return batch

    async def _gather(self, batch: list) -> list:
        """The batch that `batch`'s first item starts: what is queued, and what comes within
        the wait."""
        assert self._queue is not None
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.perf_counter()
            if self.max_gap is not None:
                remaining = min(remaining, self.max_gap)
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        self._m_depth.set(self._queue.qsize())
        return batch

    async def _run_one(self, batch: list, loop) -> None:
        """Runs one gathered batch on a model thread and answers every waiter."""
        live = [(item, fut, t) for item, fut, t in batch if not fut.done()]
        if len(live) < len(batch):
            self._m_dropped.inc(len(batch) - len(live))
        if not live:
            return
        started = time.perf_counter()
        for _, _, t in live:
            self._m_queue_s.observe(started - t)
        self._m_batch.observe(len(live))
        try:
            outputs = await loop.run_in_executor(
                self._executor, self.run_batch, [item for item, _, _ in live]
            )
            if len(outputs) != len(live):
                raise RuntimeError(f"batch of {len(live)} gave {len(outputs)} outputs")
        except Exception as exc:  # noqa: BLE001 - every waiter must hear about it
            logger.exception("batch of %d failed", len(live))
            for _, fut, _ in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        finally:
            self._m_infer_s.observe(time.perf_counter() - started)
        for (_, fut, _), out in zip(live, outputs, strict=True):
            if not fut.done():
                fut.set_result(out)
