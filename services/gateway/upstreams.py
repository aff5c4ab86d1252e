"""Calls to the classifier and generator: pooled keep-alive connections
(services.common.http_pool), per-call timeouts, retries only where safe (tenacity: a
connection that never reached the upstream), and a circuit breaker per upstream
(aiobreaker), so a dead upstream costs one fast failure per call instead of a timeout.

Not httpx (which the gateway used first, and still uses for action webhooks) nor aiohttp
(which it used next): an upstream call is on every chat turn, and their per-call machinery
was the largest part of the gateway's CPU per turn on this project's two-core machine
(docs/benchmarks.md#gateway has the figures and the command).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta

from aiobreaker import CircuitBreaker, CircuitBreakerError, CircuitBreakerState
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.common.http_pool import BadResponse, ConnectFailed, Disconnected, HttpPool
from services.common.http_pool import Reply as UpstreamReply
from services.common.request_id import upstream_headers
from services.gateway import metrics

logger = logging.getLogger(__name__)

_JSON = {"Content-Type": "application/json"}
# Failures before any byte reached the upstream: safe to try again, even for a POST.
_NOT_SENT = (ConnectFailed,)


_STATE_NAME = {
    CircuitBreakerState.CLOSED: "closed",
    CircuitBreakerState.OPEN: "open",
    CircuitBreakerState.HALF_OPEN: "half_open",
}


class UpstreamError(Exception):
    """The upstream did not answer usefully (down, timed out, breaker open, 5xx)."""

    def __init__(
        self,
        upstream: str,
        reason: str,
        response: UpstreamReply | None = None,
        overloaded: bool = False,
    ):
        super().__init__(f"{upstream}: {reason}")
        self.upstream = upstream
        self.reason = reason
        self.response = response  # set when the upstream answered with an error status
        # At capacity rather than broken: the upstream said 429, or every pooled connection
        # stayed busy for the whole timeout. Callers answer 429, not 503.
        self.overloaded = overloaded or (response is not None and response.status_code == 429)

    @property
    def retry_after_s(self) -> int:
        try:
            return max(1, int(self.response.headers.get("retry-after", "1")))
        except (AttributeError, ValueError):
            return 1


class _ErrorStatus(Exception):
    """An answer with a 4xx/5xx status (raised inside the breaker, so 5xx count)."""

    def __init__(self, reply: UpstreamReply):
        super().__init__(reply.status_code)
        self.reply = reply


class _PoolTimeout(Exception):
    """Every connection stayed busy for the whole timeout: load, not a failure."""


class _NotJson(Exception):
    """A 2xx answer whose body is not JSON."""


class Upstream:
    def __init__(
        self,
        name: str,
        base_url: str,
        timeout_s: float,
        connect_timeout_s: float,
        retries: int,
        fail_max: int,
        reset_s: float,
        connections: int = 16,
    ):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        # The pool's size is this semaphore, so that waiting for a connection (load: a 429)
        # is told apart from connecting (a failure). A small pool on purpose: the upstreams
        # batch anyway.
        self._slots = asyncio.Semaphore(connections)
        self.pool = HttpPool(self.base_url, connect_timeout_s)
        self.retries = retries
        # A 4xx is the caller's fault and a full pool is load, not the upstream failing:
        # neither counts towards opening the breaker.
        self.breaker = CircuitBreaker(
            fail_max=fail_max,
            timeout_duration=timedelta(seconds=reset_s),
            exclude=[
                lambda e: isinstance(e, _ErrorStatus) and e.reply.status_code < 500,
                lambda e: isinstance(e, _PoolTimeout),
            ],
        )
        # Children resolved once: `labels()` takes a lock and builds a key on every call.
        self._seconds = metrics.UPSTREAM_SECONDS.labels(name)
        self._breaker_state = metrics.BREAKER_STATE.labels(name)
        self._breaker_state.set(0)

    @property
    def state(self) -> str:
        return _STATE_NAME.get(self.breaker.current_state, "closed")

    async def _send(
        self, method: str, path: str, data: bytes | None, headers: dict, timeout_s: float
    ) -> UpstreamReply:
        return await self.pool.request(method, path, data, headers, timeout_s)

    async def _post(self, path: str, body: dict) -> dict:
        headers = {**_JSON, **upstream_headers()}
        data = json.dumps(body, separators=(",", ":")).encode()
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), self.timeout_s)
            except TimeoutError:
                raise _PoolTimeout() from None
        else:
            # A free slot is taken without suspending: wait_for would cost a task per call.
            await self._slots.acquire()
        try:
            try:
                # The first attempt runs bare: tenacity's machinery would cost every call,
                # and only a connection that was never made is tried again.
                reply = await self._send("POST", path, data, headers, self.timeout_s)
            except _NOT_SENT:
                if self.retries < 1:
                    raise
                await asyncio.sleep(0.05)  # the first of the backoff's waits
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self.retries),
                    wait=wait_exponential(multiplier=0.05, max=0.5),
                    retry=retry_if_exception_type(_NOT_SENT),
                    reraise=True,
                ):
                    with attempt:
                        reply = await self._send("POST", path, data, headers, self.timeout_s)
        finally:
            self._slots.release()
        if reply.status_code >= 400:
            raise _ErrorStatus(reply)
        try:
            return reply.json()
        except ValueError:
            raise _NotJson() from None

    async def post(self, path: str, body: dict) -> dict:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await self.breaker.call_async(self._post, path, body)
        except CircuitBreakerError:
            outcome = "breaker_open"
            raise UpstreamError(self.name, "circuit breaker open (recent failures)") from None
        except _ErrorStatus as e:
            outcome = f"http_{e.reply.status_code}"
            raise UpstreamError(self.name, f"answered {e.reply.status_code}", e.reply) from None
        except _PoolTimeout:
            outcome = "pool_timeout"
            raise UpstreamError(self.name, "all connections busy", overloaded=True) from None
        except _NotJson:
            outcome = "not_json"
            raise UpstreamError(self.name, "answered something that is not JSON") from None
        except TimeoutError:  # the call's total time
            outcome = "timeout"
            raise UpstreamError(self.name, "timed out") from None
        except (ConnectFailed, Disconnected, BadResponse) as e:
            outcome = "unreachable"
            raise UpstreamError(self.name, f"unreachable ({type(e).__name__})") from None
        finally:
            self._seconds.observe(time.perf_counter() - started)
            if outcome != "ok":
                metrics.UPSTREAM_ERRORS.labels(self.name, outcome).inc()
            self._breaker_state.set(metrics.BREAKER_VALUE.get(self.breaker.current_state, 0))

    async def get(self, path: str, timeout_s: float) -> UpstreamReply | None:
        """A GET outside the breaker (health and model checks); None when unreachable."""
        try:
            return await self._send("GET", path, None, {}, timeout_s)
        except (ConnectionError, TimeoutError):
            return None

    async def ready(self) -> bool:
        """The upstream's /readyz. A ready answer also closes an open breaker: the upstream
        is back (restarted, resumed), so there is no reason to wait out the breaker's reset
        time and keep failing turns (measured: recovery 10 s -> about 1 s, docs/reliability.md)."""
        r = await self.get("/readyz", 1.0)
        ok = r is not None and r.status_code == 200
        if ok and self.state != "closed":
            logger.info("%s ready again: closing its circuit breaker", self.name)
            self.breaker.close()
            self._breaker_state.set(0)
        return ok

    async def close(self) -> None:
        await self.pool.close()
