"""A keep-alive HTTP/1.1 client for calls between this deployment's own services.

Hand-written on asyncio and httptools (uvicorn's C parser, already in every serving image)
rather than a general client library: each gateway turn makes one such call, and inside
the gateway aiohttp's per-request machinery (request and response objects, header
multidicts, timer contexts, tracing hooks) was the largest part of a turn's CPU
(docs/benchmarks.md#gateway). These calls need none of it: one known host, small JSON
bodies, no cookies, redirects, proxies or compression.

What it does do: a pool of persistent connections (the caller bounds how many are in use),
a connect timeout and a per-call timeout, http and https, answers with `Content-Length` or
chunked bodies (what uvicorn sends; an answer delimited by closing the connection reads as
`Disconnected`), and the two ways a kept-alive connection goes stale (see
`HttpPool.request`). A failure to connect raises `ConnectFailed`
(nothing was sent: safe to try again); a connection lost before the answer was complete
raises `Disconnected`; a malformed answer `BadResponse`; the timeout `TimeoutError`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools


class ConnectFailed(ConnectionError):
    """No connection could be made (refused, unreachable, connect timeout): nothing sent."""


class Disconnected(ConnectionError):
    """The connection closed before the whole answer arrived."""


class BadResponse(ConnectionError):
    """The upstream answered something that is not HTTP/1.1."""


@dataclass(frozen=True)
class Reply:
    """Status, headers (names in lower case) and the whole body."""

    status_code: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self):
        return json.loads(self.body)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and its response parser; at most one call at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.lost = False
        self.answered = False  # any byte of the current answer seen
        self.idle_since = 0.0
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(BadResponse(f"malformed HTTP answer ({e})"))
            self.close()

    def connection_lost(self, exc) -> None:
        self.lost = True
        self._fail(Disconnected("connection closed before the answer was complete"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._headers, self._body = {}, []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.lost = True  # the server closes it after this answer
        if self.waiter is not None and not self.waiter.done():
            status = self.parser.get_status_code()
            self.waiter.set_result(Reply(status, b"".join(self._body), self._headers))

    def _fail(self, error: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    @property
    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class HttpPool:
    """Calls to one base URL over kept-alive connections.

    The caller bounds the calls in flight (the gateway's `Upstream` holds a semaphore of
    its pool size), so the pool never holds more connections than that.
    """

    def __init__(self, base_url: str, connect_timeout_s: float, idle_s: float = 2.0):
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.prefix = url.path.rstrip("/")
        self.ssl = ssl.create_default_context() if url.scheme == "https" else None
        self.connect_timeout_s = connect_timeout_s
        # A kept-alive connection idle longer than this is closed, not reused: the server
        # may be closing it at the same moment (uvicorn closes idle ones after 5 s).
        self.idle_s = idle_s
        authority = url.netloc.rsplit("@", 1)[-1]
        self._host_header = f"Host: {authority}\r\n".encode("latin-1")
        self._idle: deque[_Connection] = deque()
        self._open: set[_Connection] = set()
        self.closed = False

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> Reply:
        """One call. `timeout_s` covers connecting, sending and the whole answer.

        A kept-alive connection can go stale two ways: the server closed it while it was
        idle (seen before use: skipped), or closes it as this call is sent. The second is
        told by the connection dropping before any byte of the answer, and is retried once
        on a new connection: uvicorn closes only connections with no request in progress,
        so such a request was never handled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        head = self._head(method, path, body, headers)
        conn = self._take()
        if conn is not None:
            try:
                return await self._exchange(loop, conn, head, body, deadline)
            except Disconnected:
                if conn.answered:
                    raise
        conn = await self._connect(loop, deadline)
        return await self._exchange(loop, conn, head, body, deadline)

    def _head(self, method: str, path: str, body: bytes | None, headers) -> bytes:
        lines = [f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1"), self._host_header]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"Content-Length: %d\r\n\r\n" % len(body or b""))
        return b"".join(lines)

    def _take(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be stale
            if conn.usable and now - conn.idle_since < self.idle_s:
                return conn
            self._discard(conn)
        return None

    async def _connect(self, loop, deadline: float) -> _Connection:
        if self.closed:
            raise ConnectFailed("the client is closed")
        timeout = max(0.0, min(self.connect_timeout_s, deadline - loop.time()))
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    _Connection,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except TimeoutError:
            raise ConnectFailed(f"connecting to {self.host}:{self.port} timed out") from None
        except OSError as e:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port} ({e})") from None
        self._open.add(conn)
        return conn

    async def _exchange(self, loop, conn: _Connection, head: bytes, body, deadline) -> Reply:
        waiter = loop.create_future()
        conn.waiter, conn.answered = waiter, False
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            conn.transport.write(head + body if body else head)
            reply = await waiter
        except BaseException:
            # timed out, disconnected, malformed or cancelled: never reused mid-answer
            self._discard(conn)
            raise
        finally:
            timer.cancel()
            conn.waiter = None
        if conn.usable and not self.closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            self._discard(conn)
        return reply

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    async def close(self) -> None:
        self.closed = True
        for conn in list(self._open):
            self._discard(conn)
        self._idle.clear()
