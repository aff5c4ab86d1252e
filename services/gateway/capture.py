"""The gateway's side of the review inbox: turns worth a look (`parlance.review.capture`)
are redacted and queued on the event loop, and one task writes them in batches from a
worker thread, so a slow or unreachable database never slows a turn down: when the queue
is full, a capture is dropped and counted, the turn is answered as always."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from parlance.review import CapturedTurn, CaptureRules, ReviewStore, TurnFacts, redact
from services.gateway import metrics

logger = logging.getLogger(__name__)

PURGE_EVERY_S = 3600.0


class Recorder:
    def __init__(
        self,
        store: ReviewStore | None,
        rules: CaptureRules,
        pack: tuple[str, str],
        *,
        redact_text: bool = True,
        max_age: timedelta | None = None,
        max_items: int | None = None,
        queue_size: int = 1000,
        batch_size: int = 100,
    ):
        self.store = store
        self.rules = rules
        self.pack_name, self.pack_version = pack
        self.redact_text = redact_text
        self.max_age = max_age
        self.max_items = max_items
        self.batch_size = batch_size
        self.queue: asyncio.Queue[CapturedTurn] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task | None = None
        self._attached = asyncio.Event()
        if store is not None:
            self._attached.set()

    def attach(self, store: ReviewStore) -> None:
        """The inbox, once it could be opened (captures queue until then)."""
        self.store = store
        self._attached.set()

    def offer(self, turn: TurnFacts, model_version: str) -> tuple[str, ...]:
        """Queues the turn when a rule says it is worth a look; returns the reasons."""
        reasons = self.rules.reasons(turn)
        if not reasons:
            return reasons
        captured = CapturedTurn(
            text=redact(turn.text) if self.redact_text else turn.text,
            raw_intent=turn.raw_intent,
            core_intent=turn.core_intent,
            confidence=turn.confidence,
            oos=turn.oos,
            reasons=reasons,
            reply_source=turn.reply_source,
            pack_name=self.pack_name,
            pack_version=self.pack_version,
            model_version=model_version,
            second_intent=turn.second_intent,
            margin=turn.margin,
        )
        try:
            self.queue.put_nowait(captured)
        except asyncio.QueueFull:
            metrics.CAPTURE_DROPPED.inc()
            return reasons
        for reason in reasons:
            metrics.CAPTURED.labels(reason).inc()
        return reasons

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="review-capture")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Writes what is still queued (the last turns before a shutdown), for at most
        `timeout_s` (a database that hangs must not hold the shutdown), then stops."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.store is None:
            return

        async def drain() -> None:
            while await self.flush():
                pass

        with contextlib.suppress(Exception):
            await asyncio.wait_for(drain(), timeout_s)
        await asyncio.to_thread(self.store.close)

    async def flush(self, first: CapturedTurn | None = None) -> int:
        """Writes up to a batch of what is queued (after `first`, taken already)."""
        batch = [first] if first is not None else []
        while not self.queue.empty() and len(batch) < self.batch_size:
            batch.append(self.queue.get_nowait())
        if batch:
            try:
                await asyncio.to_thread(self.store.add, batch)
            except Exception:
                metrics.CAPTURE_DROPPED.inc(len(batch))
                raise
        return len(batch)

    async def _run(self) -> None:
        await self._attached.wait()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._purge)
        loop = asyncio.get_running_loop()
        last_purge = loop.time()
        while True:
            try:
                first = await asyncio.wait_for(self.queue.get(), PURGE_EVERY_S)
            except TimeoutError:
                first = None  # a quiet hour: still purge
            try:
                if first is not None:
                    written = await self.flush(first)
                    while written == self.batch_size:
                        written = await self.flush()
            except Exception as e:  # noqa: BLE001 - the database is down: dropped, say so
                logger.warning("review inbox unavailable, a batch of captures dropped: %s", e)
                await asyncio.sleep(1.0)
            if loop.time() - last_purge > PURGE_EVERY_S:
                last_purge = loop.time()
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self._purge)

    def _purge(self) -> None:
        removed = self.store.purge(self.max_age, self.max_items)
        if removed:
            logger.info("review inbox: %d captured turns past retention removed", removed)
