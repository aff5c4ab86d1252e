"""API keys and per-key rate limits.

Keys come in `Authorization: Bearer <key>` or `X-API-Key: <key>` and are compared in
constant time (`hmac.compare_digest`) against every configured key. Rate limits use the
`limits` library (moving window), in memory or in Redis when the sessions are there too,
keyed by a hash of the API key (never the key itself: it would land in Redis) or, without
keys, by the client address. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from fastapi import Request

from services.common.errors import RateLimited, Unauthorized
from services.gateway import metrics
from services.gateway.config import GatewaySettings


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
            uri = ("async+" + settings.redis_url) if settings.redis_url else "async+memory://"
            self.limiter = MovingWindowRateLimiter(storage_from_string(uri))

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
        if not await self.limiter.hit(self.limit, identity):
            stats = await self.limiter.get_window_stats(self.limit, identity)
            metrics.RATE_LIMITED.inc()
            raise RateLimited(f"rate limit of {self.limit} exceeded",
                              int(stats.reset_time - time.time()) + 1)

    async def __call__(self, request: Request) -> str:
        identity = self.authenticate(request)
        await self.check_rate(identity)
        return identity
