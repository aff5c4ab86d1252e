"""Calls to the classifier and generator: one pooled `httpx.AsyncClient` each, per-call
timeouts, retries only where safe (tenacity: a connection that never reached the upstream),
and a circuit breaker per upstream (aiobreaker), so a dead upstream costs one fast failure
per call instead of a timeout."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import httpx
from aiobreaker import CircuitBreaker, CircuitBreakerError, CircuitBreakerState
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.common.request_id import upstream_headers
from services.gateway import metrics

logger = logging.getLogger(__name__)


class UpstreamError(Exception):
    """The upstream did not answer usefully (down, timed out, breaker open, 5xx)."""

    def __init__(
        self,
        upstream: str,
        reason: str,
        response: httpx.Response | None = None,
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
        self.client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            # A small pool on purpose: httpcore checks every pooled connection for each
            # request it places (measured: with 256 connections that check was ~35 % of the
            # gateway's CPU at 64 clients); the upstreams batch anyway.
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        self.retries = retries
        # A 4xx is the caller's fault and a full pool is load, not the upstream failing:
        # neither counts towards opening the breaker.
        self.breaker = CircuitBreaker(
            fail_max=fail_max,
            timeout_duration=timedelta(seconds=reset_s),
            exclude=[
                lambda e: isinstance(e, httpx.HTTPStatusError) and e.response.status_code < 500,
                lambda e: isinstance(e, httpx.PoolTimeout),
            ],
        )
        metrics.BREAKER_STATE.labels(name).set(0)

    @property
    def state(self) -> str:
        return {
            CircuitBreakerState.CLOSED: "closed",
            CircuitBreakerState.OPEN: "open",
            CircuitBreakerState.HALF_OPEN: "half_open",
        }.get(self.breaker.current_state, "closed")

    async def _post(self, path: str, body: dict) -> dict:
        headers = upstream_headers()
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=0.05, max=0.5),
            retry=retry_if_exception_type((httpx.ConnectError, httpx.ConnectTimeout)),
            reraise=True,
        ):
            with attempt:
                r = await self.client.post(path, json=body, headers=headers)
        r.raise_for_status()
        return r.json()

    async def post(self, path: str, body: dict) -> dict:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await self.breaker.call_async(self._post, path, body)
        except CircuitBreakerError:
            outcome = "breaker_open"
            raise UpstreamError(self.name, "circuit breaker open (recent failures)") from None
        except httpx.HTTPStatusError as e:
            outcome = f"http_{e.response.status_code}"
            raise UpstreamError(self.name, f"answered {e.response.status_code}", e.response) from e
        except httpx.PoolTimeout as e:
            outcome = "pool_timeout"
            raise UpstreamError(self.name, "all connections busy", overloaded=True) from e
        except httpx.TimeoutException as e:
            outcome = "timeout"
            raise UpstreamError(self.name, "timed out") from e
        except httpx.HTTPError as e:
            outcome = "unreachable"
            raise UpstreamError(self.name, f"unreachable ({type(e).__name__})") from e
        finally:
            metrics.UPSTREAM_SECONDS.labels(self.name).observe(time.perf_counter() - started)
            if outcome != "ok":
                metrics.UPSTREAM_ERRORS.labels(self.name, outcome).inc()
            metrics.BREAKER_STATE.labels(self.name).set(
                {"closed": 0, "half_open": 1, "open": 2}[self.state]
            )

    async def ready(self) -> bool:
        """The upstream's /readyz. A ready answer also closes an open breaker: the upstream
        is back (restarted, resumed), so there is no reason to wait out the breaker's reset
        time and keep failing turns (measured: recovery 10 s -> about 1 s, docs/reliability.md)."""
        try:
            r = await self.client.get("/readyz", timeout=1.0)
        except httpx.HTTPError:
            return False
        ok = r.status_code == 200
        if ok and self.state != "closed":
            logger.info("%s ready again: closing its circuit breaker", self.name)
            self.breaker.close()
            metrics.BREAKER_STATE.labels(self.name).set(0)
        return ok

    async def close(self) -> None:
        await self.client.aclose()
