"""API keys, per-key rate limits and the cap on turns in flight, enforced by one pure-ASGI
middleware before any route runs or any body is read.

Keys come in `Authorization: Bearer <key>` or `X-API-Key: <key>` and are compared in
constant time (`hmac.compare_digest`) against every configured key. Rate limits use the
`limits` library (moving window), in memory or in Redis when the sessions are there too,
keyed by a hash of the API key (never the key itself: it would land in Redis) or, without
keys, by the client address. Keys are never logged.

Every path needs a key when keys are configured, except liveness, readiness, metrics (for
orchestrators and Prometheus) and the static chat and review pages (no data; they ask for
the key). That includes /docs and /openapi.json. The review inbox's routes take the admin
key instead.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

from starlette.requests import Request

from services.common.errors import (
    Overloaded,
    RateLimited,
    ServiceError,
    Unauthorized,
    error_response,
)
from services.common.middleware import RequestLedger
from services.gateway import metrics
from services.gateway.config import GatewaySettings

logger = logging.getLogger(__name__)


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key")


class Guard:
    def __init__(self, settings: GatewaySettings):
        self.keys = [k.encode() for k in settings.keys]
        self.limit = None
        if settings.rate_limit:
            from limits import parse
            from limits.aio.strategies import MovingWindowRateLimiter
            from limits.storage import storage_from_string

            self.limit = parse(settings.rate_limit)
            if settings.redis_url:
                # redis-py (a serving dependency already), not limits' default coredis
                storage = storage_from_string(
                    "async+" + settings.redis_url, implementation="redispy"
                )
            else:
                storage = storage_from_string("async+memory://")
            self.limiter = MovingWindowRateLimiter(storage)

    def authenticate(self, request: Request) -> str:
        """The caller's identity for rate limiting; raises 401 when keys are configured and
        none of them matches."""
        if not self.keys:
            return "addr:" + (request.client.host if request.client else "unknown")
        key = (presented_key(request) or "").encode()
        # Compare against every key, so the time taken does not say which one was close.
        matched = False
        for k in self.keys:
            matched |= hmac.compare_digest(key, k)
        if not key or not matched:
            metrics.AUTH_FAILURES.inc()
            raise Unauthorized()
        return "key:" + hashlib.sha256(key).hexdigest()[:16]

    async def check_rate(self, identity: str) -> None:
        if self.limit is None:
            return
        try:
            allowed = await self.limiter.hit(self.limit, identity)
        except Exception:  # noqa: BLE001 - the limiter's storage (Redis) is unreachable
            # Fail open: a broken rate-limit store must not take every turn down with it
            # (the session store's own check answers 503 when Redis is really needed).
            metrics.RATE_LIMIT_ERRORS.inc()
            logger.warning("rate limiter storage unavailable; request allowed")
            return
        if not allowed:
            stats = await self.limiter.get_window_stats(self.limit, identity)
            metrics.RATE_LIMITED.inc()
            raise RateLimited(
                f"rate limit of {self.limit} exceeded", int(stats.reset_time - time.time()) + 1
            )


OPEN_PATHS = frozenset({"/healthz", "/readyz", "/ping", "/metrics", "/", "/review"})
# The review inbox asks for the admin key instead (services.common.admin), not an API key.
ADMIN_PREFIX = "/v1/review/"
# Turns cost upstream work; past the cap a caller gets 429 at once, not a place in a queue
# that ends in a timeout.
TURN_PATHS = frozenset({"/v1/chat", "/v1/classify"})


class GuardMiddleware:
    """Inside the common ServiceMiddleware, so a 401/429 still carries a request id and is
    counted in the HTTP metrics."""

    def __init__(self, app, guard: Guard, max_in_flight: int, ledger: RequestLedger | None = None):
        self.app = app
        self.guard = guard
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        # turns taken on and answered (past the guard), for the shutdown line
        self.ledger = ledger if ledger is not None else RequestLedger()

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] != "http"
            or scope["path"] in OPEN_PATHS
            or scope.get("method") == "OPTIONS"
        ):  # CORS preflights carry no key
            await self.app(scope, receive, send)
            return
        admin = scope["path"].startswith(ADMIN_PREFIX)
        try:
            request = Request(scope)
            if admin:
                # the route checks the admin key; guesses are rate limited per address
                host = request.client.host if request.client else "unknown"
                await self.guard.check_rate("admin:" + host)
            else:
                await self.guard.check_rate(self.guard.authenticate(request))
            if scope["path"] in TURN_PATHS and self.in_flight >= self.max_in_flight:
                metrics.OVERLOADED.inc()
                raise Overloaded(
                    f"the gateway has {self.max_in_flight} turns in flight; retry shortly"
                )
        except ServiceError as e:
            await error_response(e.status_code, e.code, e.message, e.headers)(scope, receive, send)
            return
        if scope["path"] not in TURN_PATHS:
            await self.app(scope, receive, send)
            return
        self.in_flight += 1
        metrics.TURNS_IN_FLIGHT.set(self.in_flight)
        try:
            await self.ledger.track(self.app, scope, receive, send)
        finally:
            self.in_flight -= 1
            metrics.TURNS_IN_FLIGHT.set(self.in_flight)
