"""One pure-ASGI middleware: request id, body size limit, HTTP metrics.

Pure ASGI rather than `BaseHTTPMiddleware`: no extra task per request and no buffering of
streamed responses, which matters when the HTTP layer must cost almost nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

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

    def counting(self, send):
        """`send` that notes the end of the response body."""

        async def counted_send(message):
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.answered += 1

        return counted_send

    def line(self, what: str) -> tuple[str, dict]:
        """The log message and its fields: `what` names the unit (requests, turns)."""
        return (
            f"shut down: {self.started} {what} taken on, {self.answered} answered",
            {f"{what}_started": self.started, f"{what}_answered": self.answered},
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
        if self.ledger is not None and scope["path"] not in PROBE_PATHS:
            self.ledger.started += 1
            send = self.ledger.counting(send)

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
            if too_big:
                await self._reject_413(send_with_id)
            else:
                await self.app(scope, self._limited(receive, send_with_id), send_with_id)
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            metrics.HTTP_REQUESTS.labels(path, method, f"{status['code'] // 100}xx").inc()
            metrics.HTTP_LATENCY.labels(path, method).observe(time.perf_counter() - started)

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

    async def _reject_413(self, send):
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
