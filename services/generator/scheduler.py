"""Continuous batching for the ONNX decoder: requests join the running batch between decoding
steps and leave it when their reply ends (iteration-level scheduling, as in
text-generation-inference), instead of waiting for a whole batch to finish.

With whole-batch scheduling (`services.common.batcher.Batcher`, which the torch backend
keeps), a batch runs as long as its longest reply while its short replies wait, and the
requests that arrive meanwhile form the next, smaller batch. Here a free row is filled at the
next step. The queue, its bound (429), the model thread, the metrics and shutdown are the
common batcher's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

from services.common.batcher import Batcher
from services.common.errors import NotReady
from services.generator import metrics
from services.generator.model import GenerationRequest, GenerationResult, GeneratorModel

logger = logging.getLogger(__name__)

# Steps per hop to the model thread while no request waits: each hop costs a thread
# hand-off and an event-loop wake-up; a waiting request or an ended reply ends the run early.
MAX_STEPS_PER_CALL = 8


class ContinuousBatcher(Batcher[GenerationRequest, GenerationResult]):
    def __init__(self, model: GeneratorModel, **kwargs):
        if model.decoder is None:
            raise ValueError("continuous batching needs the ONNX decoder (backend onnx*)")
        super().__init__(model.respond, **kwargs)
        self.model = model
        self._batch = model.decoder.batch()
        self._waiting: dict[int, tuple[GenerationRequest, asyncio.Future]] = {}
        self._keys = itertools.count()
        # Requests join when at least this many rows are free (or the batch is empty): each
        # join runs the encoder and copies the batch's arrays, cheaper for several at once.
        self._min_join = max(1, self.max_batch_size // 4)

    async def stop(self) -> None:
        await super().stop()
        for _, fut in list(self._waiting.values()):  # in the running batch: answered
            if not fut.done():
                fut.set_exception(NotReady("service is shutting down"))
        self._waiting.clear()

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            joining = [await self._queue.get()] if not self._waiting else []
            room = self.max_batch_size - len(self._waiting)
            if joining or room >= self._min_join:
                while len(joining) < room and not self._queue.empty():
                    joining.append(self._queue.get_nowait())
            self._m_depth.set(self._queue.qsize())
            live = [(item, fut, t) for item, fut, t in joining if not fut.done()]
            if len(live) < len(joining):
                self._m_dropped.inc(len(joining) - len(live))
            # Callers that went away (a deadline, a closed connection) free their rows.
            abandoned = [k for k, (_, fut) in self._waiting.items() if fut.done()]
            for key in abandoned:
                del self._waiting[key]
            self._busy = True
            started = time.perf_counter()
            for _, _, t in live:
                self._m_queue_s.observe(started - t)
            entries = [(next(self._keys), item, fut) for item, fut, _ in live]
            for key, item, fut in entries:
                self._waiting[key] = (item, fut)
            # The model thread reads this snapshot; `_waiting` is the event loop's alone.
            items = {key: item for key, (item, _) in self._waiting.items()}
            try:
                ended, steps = await loop.run_in_executor(
                    self._executor, self._advance, entries, abandoned, items
                )
            except Exception as exc:  # noqa: BLE001 - every waiter must hear about it
                logger.exception("decoding a batch of %d failed", len(self._waiting))
                for _, fut in self._waiting.values():
                    if not fut.done():
                        fut.set_exception(exc)
                self._waiting.clear()
                self._batch = self.model.decoder.batch()
                continue
            finally:
                self._busy = bool(self._waiting)
            elapsed = time.perf_counter() - started
            self._m_infer_s.observe(elapsed)
            if steps:
                metrics.TIME_PER_TOKEN.observe(elapsed / steps)
            for key, result in ended:
                entry = self._waiting.pop(key, None)
                if entry and not entry[1].done():
                    entry[1].set_result(result)
            self._busy = bool(self._waiting)

    def _advance(
        self, entries: list, abandoned: list[int], items: dict[int, GenerationRequest]
    ) -> tuple[list, int]:
        """On the model thread: drop the abandoned rows, admit the new ones, and decode
        until a reply ends, a request waits for a row, or MAX_STEPS_PER_CALL steps."""
        batch = self._batch
        if abandoned:
            batch.drop(set(abandoned))
        if entries:
            ids, mask = self.model.encode([self.model.source_of(item) for _, item, _ in entries])
            batch.admit(
                [key for key, _, _ in entries],
                ids,
                mask,
                [item.max_new_tokens for _, item, _ in entries],
            )
        ended, steps = [], 0
        while len(batch) and steps < MAX_STEPS_PER_CALL:
            self._m_batch.observe(len(batch))
            rows = batch.step()
            steps += 1
            for row in rows:
                ended.append((row.key, self.model.result_of(items[row.key], row.tokens)))
            free = self.max_batch_size - (len(items) - len(ended))
            if rows or (free >= self._min_join and self._queue.qsize()):
                break
        return ended, steps
