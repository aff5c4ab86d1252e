"""One pure-ASGI middleware: request id, body size limit, HTTP metrics.

Pure ASGI rather than `BaseHTTPMiddleware`: no extra task per request and no buffering of
streamed responses, which matters when the HTTP layer must cost almost nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cache

from starlette.exceptions import HTTPException

from services.common import metrics
from services.common.errors import error_body
from services.common.request_id import HEADER, new_request_id, set_request_id

_HEADER_BYTES = HEADER.lower().encode()
# Probes and scrapes: not work a caller waits for, so not in the ledger.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/ping", "/metrics"})


@dataclass
class RequestLedger:
    """Requests taken on and requests answered, for a service's shutdown log line: after a
    SIGTERM the two must be equal (uvicorn drains its connections before the lifespan ends;
    a connection reset before the app read its request was never taken on, docs/deploy.md)."""

    started: int = 0
    answered: int = 0

    async def track(self, app, scope, receive, send) -> None:
        """Run `app` on one request, counted: taken on now, answered when its response body
        has been sent. An exception before any response counts as answered too: the
        server's error middleware, outside every other layer, sends the 500 next."""
        self.started += 1
        response = {"started": False}

        async def counted_send(message):
            if message["type"] == "http.response.start":
                response["started"] = True
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.answered += 1

        try:
            await app(scope, receive, counted_send)
        except Exception:
            if not response["started"]:
                self.answered += 1
            raise

    def line(self, what: str) -> tuple[str, dict]:
        """The log message and its fields: `what` names the unit (requests, turns)."""
        return (
            f"shut down: {self.started} {what} taken on, {self.answered} answered",
            {f"{what}_started": self.started, f"{what}_answered": self.answered},
        )


@cache
def _http_series(route: str, method: str, status_class: int):
    """The request counter's and latency histogram's children for one label set, resolved
    once: `labels()` takes a lock and builds its key on every call. The label sets are
    bounded (route templates, HTTP methods, status classes), so is this cache."""
    return (
        metrics.HTTP_REQUESTS.labels(route, method, f"{status_class}xx"),
        metrics.HTTP_LATENCY.labels(route, method),
    )


class ServiceMiddleware:
    def __init__(self, app, max_body_bytes: int = 2_000_000, ledger: RequestLedger | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.ledger = ledger

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        length = None
        for name, value in scope.get("headers", []):
            if name == _HEADER_BYTES:
                incoming = value.decode("latin-1")
            elif name == b"content-length":
                length = value
        rid = new_request_id(incoming)
        set_request_id(rid)
        started = time.perf_counter()
        status = {"code": 500}
        rid_header = (_HEADER_BYTES, rid.encode())

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), rid_header]}
            await send(message)

        metrics.HTTP_IN_FLIGHT.inc()
        try:
            too_big = False
            if length is not None:
                try:
                    too_big = int(length) > self.max_body_bytes
                except ValueError:
                    too_big = False
            handler = self._reject_413 if too_big else self.app
            if self.ledger is not None and scope["path"] not in PROBE_PATHS:
                await self.ledger.track(
                    handler, scope, self._limited(receive, send_with_id), send_with_id
                )
            else:
                await handler(scope, self._limited(receive, send_with_id), send_with_id)
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            count, latency = _http_series(path, method, status["code"] // 100)
            count.inc()
            latency.observe(time.perf_counter() - started)

    def _limited(self, receive, send):
        """Counts streamed (chunked) bodies too, which carry no Content-Length."""
        seen = {"bytes": 0}
        limit = self.max_body_bytes

        async def wrapped():
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > limit:
                    # Raised inside the app's body read. An HTTPException, because FastAPI
                    # re-raises those from body parsing (anything else becomes a 400).
                    raise HTTPException(413, f"request body exceeds {limit} bytes")
            return message

        return wrapped

    async def _reject_413(self, scope, receive, send):
        """An ASGI app of its own: the answer to a body declared too large."""
        body = json.dumps(
            error_body("payload_too_large", f"request body exceeds {self.max_body_bytes} bytes")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
