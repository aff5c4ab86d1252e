"""Dialogue state per session, behind one interface.

- `MemoryStore`: a dict with a TTL, for a single gateway process (the default);
- `RedisStore`: Redis (`REDIS_URL`), so state survives a gateway restart and several gateway
  workers share it.

Both serialise concurrent turns of one session with a per-session lock (an asyncio lock in
memory, a Redis lock across processes), so two turns never read the same state and write
over each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from services.common.errors import Overloaded, UpstreamUnavailable

PREFIX = "parlance:session:"


class StoreUnavailable(UpstreamUnavailable):
    """Redis did not answer: the turn is refused (503) and nothing is half-saved, so the
    client can retry it once the store is back."""

    def __init__(self):
        super().__init__("the session store is unavailable; retry shortly")


@asynccontextmanager
async def _redis_errors() -> AsyncIterator[None]:
    from redis.exceptions import RedisError

    try:
        yield
    except RedisError:
        raise StoreUnavailable() from None


class SessionStore(Protocol):
    async def get(self, session_id: str) -> dict | None: ...
    async def put(self, session_id: str, state: dict) -> None: ...
    def lock(self, session_id: str) -> AsyncIterator[None]: ...
    async def count(self) -> int: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class MemoryStore:
    def __init__(self, ttl_s: int, lock_timeout_s: float = 10.0):
        self.ttl_s = ttl_s
        self.lock_timeout_s = lock_timeout_s
        self._data: dict[str, tuple[float, dict]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _evict(self) -> None:
        now = time.monotonic()
        for sid in [s for s, (exp, _) in self._data.items() if exp < now]:
            self._data.pop(sid, None)
            lock = self._locks.get(sid)
            if lock is not None and not lock.locked():
                self._locks.pop(sid, None)

    async def get(self, session_id: str) -> dict | None:
        item = self._data.get(session_id)
        if item is None or item[0] < time.monotonic():
            return None
        return json.loads(json.dumps(item[1]))  # a copy: callers mutate freely

    async def put(self, session_id: str, state: dict) -> None:
        self._data[session_id] = (time.monotonic() + self.ttl_s, json.loads(json.dumps(state)))
        if len(self._data) % 256 == 0:
            self._evict()

    @asynccontextmanager
    async def lock(self, session_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), self.lock_timeout_s)
        except TimeoutError:
            raise Overloaded("this session is busy with another turn; retry") from None
        try:
            yield
        finally:
            lock.release()

    async def count(self) -> int:
        self._evict()
        return len(self._data)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()


class RedisStore:
    def __init__(self, url: str, ttl_s: int, lock_timeout_s: float = 10.0):
        import redis.asyncio as redis

        self.redis = redis.from_url(
            url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2
        )
        self.ttl_s = ttl_s
        self.lock_timeout_s = lock_timeout_s

    async def get(self, session_id: str) -> dict | None:
        async with _redis_errors():
            raw = await self.redis.get(PREFIX + session_id)
        return json.loads(raw) if raw else None

    async def put(self, session_id: str, state: dict) -> None:
        async with _redis_errors():
            await self.redis.set(PREFIX + session_id, json.dumps(state), ex=self.ttl_s)

    @asynccontextmanager
    async def lock(self, session_id: str) -> AsyncIterator[None]:
        from redis.exceptions import RedisError

        lock = self.redis.lock(
            f"parlance:lock:{session_id}",
            timeout=self.lock_timeout_s,
            blocking_timeout=self.lock_timeout_s,
        )
        async with _redis_errors():
            acquired = await lock.acquire()
        if not acquired:
            raise Overloaded("this session is busy with another turn; retry")
        try:
            yield
        finally:
            # LockError: it expired under a very slow turn, nothing left to release; other
            # Redis errors: the store went away mid-turn, and the lock expires on its own.
            with contextlib.suppress(RedisError):
                await lock.release()

    async def count(self) -> int:
        n = 0
        async for _ in self.redis.scan_iter(match=PREFIX + "*", count=500):
            n += 1
            if n >= 100_000:
                break
        return n

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return False

    async def close(self) -> None:
        await self.redis.aclose()


def make_store(redis_url: str | None, ttl_s: int, lock_timeout_s: float) -> SessionStore:
    if redis_url:
        return RedisStore(redis_url, ttl_s, lock_timeout_s)
    return MemoryStore(ttl_s, lock_timeout_s)
