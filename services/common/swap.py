"""Serving one model version and swapping in the next without dropping a request.

A `ModelHost` owns what a model service serves: the model, its batcher and the one thread
the model runs on (`batcher.model_executor`). A swap loads and warms the new version on a
thread of its own while the old one keeps serving, then switches both at once (routes read
them from `app.state` per request); the old batcher keeps answering what was queued or
in flight and stops once it has been idle for a grace period. A load that fails, or a
version the service's own check refuses, leaves the old version serving, and the caller is
told why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.common import metrics
from services.common.batcher import model_executor
from services.common.errors import Conflict, Forbidden, InvalidInput

logger = logging.getLogger(__name__)

# How long a retired batcher must have been idle before it stops: a request that looked
# up the old batcher just before the switch still reaches it.
RETIRE_GRACE_S = 2.0


@dataclass(eq=False)  # compared (and kept in sets) by identity
class Served:
    model: Any
    batcher: Any
    artifact: str
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    load_s: float = 0.0
    warmup_s: float = 0.0

    def view(self) -> dict:
        return {
            "version": self.model.version,
            "artifact": self.artifact,
            "loaded_at": self.loaded_at.isoformat(timespec="seconds"),
        }


class ModelHost:
    def __init__(
        self,
        name: str,
        load_model: Callable[[str], Any],
        make_batcher: Callable[[Any, Any], Any],
        on_ready: Callable[[Any], None] = lambda model: None,
        check: Callable[[Any, Any, dict], str | None] | None = None,
        models_dir: str | None = None,
    ):
        self.name = name
        self.load_model = load_model
        self.make_batcher = make_batcher
        self.on_ready = on_ready
        self.check = check  # (serving, candidate, options) -> why not, or None
        self.models_dir = Path(os.path.abspath(models_dir)) if models_dir else None
        self.current: Served | None = None
        # What a rollback goes back to: its path and version, not the model (whose memory
        # is freed once it retires).
        self.previous: dict | None = None
        self.swaps = 0
        self.last_error: str | None = None
        self._lock = asyncio.Lock()
        # Old versions still finishing their requests, by the task that retires each.
        self._retiring: dict[asyncio.Task, Served] = {}

    # -- where an artifact may come from --------------------------------------------------
    def resolve(self, artifact: str) -> str:
        """The artifact's real path. With a models directory, the name must lie inside it
        as written (a link the operator put there may point elsewhere: that is theirs to
        decide; a request's `../` or absolute path outside is not)."""
        try:
            if self.models_dir is None:
                return os.path.realpath(artifact)
            named = os.path.normpath(os.path.join(self.models_dir, artifact))
            if os.path.commonpath([named, str(self.models_dir)]) != str(self.models_dir):
                raise Forbidden(f"artifact {artifact!r} is outside the models directory")
            return os.path.realpath(named)
        except (ValueError, OSError) as e:  # a NUL byte, a path too long: not a path
            raise InvalidInput(f"artifact: not a usable path ({e})") from None

    # -- loading ----------------------------------------------------------------------------
    async def _load(self, artifact: str) -> Served:
        """Load, warm up and start a batcher on a new model thread (see model_executor)."""
        executor = model_executor(self.name)
        loop = asyncio.get_running_loop()
        try:
            started = time.perf_counter()
            model = await loop.run_in_executor(executor, self.load_model, artifact)
            load_s = time.perf_counter() - started
            warmup_s = await loop.run_in_executor(executor, model.warmup)
            workers = getattr(model, "workers", 1)
            if workers > 1:  # a model that runs batches side by side: a thread for each
                executor.shutdown(wait=False)
                executor = model_executor(self.name, workers)
            batcher = self.make_batcher(model, executor)
            await batcher.start()
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return Served(model, batcher, artifact, load_s=load_s, warmup_s=warmup_s)

    def _install(self, app, served: Served) -> None:
        # One step for every request that starts from here on (no await in between).
        app.state.model, app.state.batcher = served.model, served.batcher
        self.current = served
        metrics.MODEL_LOADED_AT.labels(self.name).set(served.loaded_at.timestamp())
        try:
            self.on_ready(served.model)
        except Exception:  # noqa: BLE001 - metrics and logs only: the version serves anyway
            logger.exception("%s: on_ready failed for %s", self.name, served.model.version)

    async def start(self, app, artifact: str) -> None:
        """The first version, at start-up: a failure leaves the service up but never ready."""
        try:
            # the deployment's own setting: anywhere, models_dir or not
            served = await self._load(os.path.realpath(artifact))
        except Exception:
            logger.exception("loading the %s failed", self.name)
            app.state.load_failed = True
            return
        self._install(app, served)
        app.state.ready = True
        logger.info(
            "%s ready: %s (warm-up %.2f s)", self.name, served.model.version, served.warmup_s
        )

    # -- swapping ---------------------------------------------------------------------------
    async def swap(self, app, artifact: str, options: dict | None = None) -> dict:
        """Swap to `artifact` as a request names it (checked against the models directory)."""
        return await self._swap(app, self.resolve(artifact), options)

    async def _swap(self, app, path: str, options: dict | None = None) -> dict:
        """Swap to the real path `path`, already trusted (resolved from a request, the
        watched link, or what served before)."""
        if self._lock.locked():
            raise Conflict(f"a {self.name} swap is already in progress; retry when it is done")
        if self.current is None and not getattr(app.state, "load_failed", False):
            raise Conflict(f"the {self.name} is still loading its first version; retry shortly")
        async with self._lock:
            old = self.current  # None: the start-up version failed, this one may recover
            serving = f"still serving {old.model.version}" if old else "nothing is serving"
            try:
                candidate = await self._load(path)
            except Exception as e:  # noqa: BLE001 - any load failure: the old one serves on
                metrics.MODEL_SWAPS.labels(self.name, "load_failed").inc()
                self.last_error = f"{path}: {e}"
                logger.error("swap refused, %s: %s", serving, e)
                raise InvalidInput(f"could not load {path}: {e}; {serving}") from None
            problem = None
            if old is not None and self.check is not None:
                try:
                    problem = self.check(old.model, candidate.model, options or {})
                except Exception as e:  # noqa: BLE001 - a failing check refuses, never leaks
                    problem = f"the new version could not be checked ({e})"
            if problem:
                metrics.MODEL_SWAPS.labels(self.name, "refused").inc()
                self.last_error = problem
                await candidate.batcher.stop()
                raise Conflict(f"{problem}; {serving}")
            self._install(app, candidate)
            self.swaps += 1
            self.last_error = None
            metrics.MODEL_SWAPS.labels(self.name, "swapped").inc()
            if old is None:
                app.state.load_failed = False
                app.state.ready = True
                logger.info("%s ready after a failed start: %s", self.name, candidate.model.version)
            else:
                self.previous = old.view()
                task = asyncio.create_task(self._retire(old))
                self._retiring[task] = old
                task.add_done_callback(self._retiring.pop)
                logger.info(
                    "%s swapped: %s -> %s (load %.2f s, warm-up %.2f s)",
                    self.name,
                    old.model.version,
                    candidate.model.version,
                    candidate.load_s,
                    candidate.warmup_s,
                )
            return {
                "version": candidate.model.version,
                "artifact": path,
                "previous": old.view() if old else None,
                "load_seconds": round(candidate.load_s, 3),
                "warmup_seconds": round(candidate.warmup_s, 3),
            }

    async def rollback(self, app) -> dict:
        if self.previous is None:
            raise Conflict(f"the {self.name} has no previous version to roll back to")
        return await self._swap(app, self.previous["artifact"], {"rollback": True})

    async def _retire(self, old: Served) -> None:
        idle_since = None
        while True:
            await asyncio.sleep(0.1)
            if not old.batcher.idle:
                idle_since = None
                continue
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= RETIRE_GRACE_S:
                break
        await old.batcher.stop()
        logger.info("%s %s retired", self.name, old.model.version)

    def view(self) -> dict:
        return {
            "serving": self.current.view() if self.current else None,
            "previous": self.previous,
            "swaps": self.swaps,
            "swapping": self._lock.locked(),
            "last_error": self.last_error,
        }

    # -- watching a models directory ----------------------------------------------------------
    def wanted(self) -> str | None:
        """The artifact models_dir/current names, as written there (the target of a
        symbolic link, or a file's content); None without one."""
        if self.models_dir is None:
            return None
        current = self.models_dir / "current"
        if current.is_symlink():
            return os.readlink(current)
        if current.is_file():
            return current.read_text().strip() or None
        return None

    async def watch(self, app, period_s: float) -> None:
        """Swap when models_dir/current names another artifact than it did: on the first
        look when it names another than the one serving, then on every change (so a swap
        by the admin endpoint is not undone while `current` stays as it was)."""
        seen: str | None = None
        logger.info("%s: watching %s every %g s", self.name, self.models_dir / "current", period_s)
        while True:
            await asyncio.sleep(period_s)
            if self.current is None or self._lock.locked():
                continue
            try:
                name = self.wanted()
                target = self.resolve(name) if name else None
            except Exception as e:  # noqa: BLE001 - a bad `current`: say so, keep serving
                if seen != repr(e):
                    logger.error("%s/current: %s", self.models_dir, e)
                    seen = repr(e)
                continue
            if target is None or target == seen:
                continue
            seen = target
            if target == self.current.artifact:
                continue
            try:
                await self._swap(app, target)
            except Exception as e:  # noqa: BLE001 - logged; the old version serves on
                logger.error("%s: not swapped to %s: %s", self.name, name, e)

    async def stop(self) -> None:
        for task, old in list(self._retiring.items()):
            task.cancel()
            with contextlib.suppress(Exception):
                await old.batcher.stop()
        if self.current is not None:
            with contextlib.suppress(Exception):
                await self.current.batcher.stop()
