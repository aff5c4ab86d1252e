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
        store: ReviewStore,
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
        await asyncio.to_thread(self._purge)
        self._task = asyncio.create_task(self._run(), name="review-capture")

    async def stop(self) -> None:
        """Writes what is still queued (the last turns before a shutdown), then stops."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.flush()
        await asyncio.to_thread(self.store.close)

    async def flush(self, first: CapturedTurn | None = None) -> int:
        """Writes up to a batch of what is queued (after `first`, taken already)."""
        batch = [first] if first is not None else []
        while not self.queue.empty() and len(batch) < self.batch_size:
            batch.append(self.queue.get_nowait())
        if batch:
            await asyncio.to_thread(self.store.add, batch)
        return len(batch)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_purge = loop.time()
        while True:
            first = await self.queue.get()
            try:
                written = await self.flush(first)
                while written == self.batch_size:
                    written = await self.flush()
            except Exception as e:  # noqa: BLE001 - the database is down: drop, say so
                metrics.CAPTURE_DROPPED.inc(self.queue.qsize() + 1)
                while not self.queue.empty():
                    self.queue.get_nowait()
                logger.warning("review inbox unavailable, captures dropped: %s", e)
                await asyncio.sleep(1.0)
            if loop.time() - last_purge > PURGE_EVERY_S:
                last_purge = loop.time()
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self._purge)

    def _purge(self) -> None:
        removed = self.store.purge(self.max_age, self.max_items)
        if removed:
            logger.info("review inbox: %d captured turns past retention removed", removed)
