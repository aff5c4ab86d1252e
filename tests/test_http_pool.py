"""The gateway's keep-alive HTTP client (services.common.http_pool) against real TCP servers
on loopback that misbehave in the ways a kept-alive connection meets: answers with and
without keep-alive, a server that closes idle connections, one that never answers, one that
hangs up mid-answer, garbage, chunked bodies, and callers that give up."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from services.common.http_pool import BadResponse, ConnectFailed, Disconnected, HttpPool


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


class Server:
    """A loopback server whose `respond(request_head, body) -> bytes | None` decides each
    answer (None: no answer, connection held open); it records every request and counts
    connections. `close_after`: hang up after each answer (a keep-alive timeout that
    fires at once)."""

    def __init__(self, respond, close_after: bool = False):
        self.respond = respond
        self.close_after = close_after
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.writers = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        for w in self.writers:
            w.close()
        self.server.close()

    async def _handle(self, reader, writer):
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                answer = self.respond(head, body)
                if answer is None:
                    await asyncio.sleep(3600)
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def run(coro):
    return asyncio.run(coro)


def test_calls_reuse_one_connection_and_send_what_was_asked():
    async def go():
        async with Server(lambda head, body: ok(body)) as s:
            pool = HttpPool(s.url + "/prefix/", connect_timeout_s=1)
            replies = [
                await pool.request(
                    "POST", "/v1/classify", b'{"n":%d}' % i, {"X-Request-ID": f"r{i}"}, 5
                )
                for i in range(3)
            ]
            await pool.close()
            return s, replies

    s, replies = run(go())
    assert [r.json() for r in replies] == [{"n": 0}, {"n": 1}, {"n": 2}]  # echoed bodies
    assert replies[0].headers["content-type"] == "application/json"
    assert s.connections == 1
    head = s.requests[2][0].decode()
    assert head.startswith("POST /prefix/v1/classify HTTP/1.1\r\n")
    assert "Host: 127.0.0.1:" in head and "X-Request-ID: r2" in head
    assert "Content-Length: 7" in head


def test_a_server_that_hangs_up_after_each_answer_costs_nothing_but_a_reconnect():
    """The keep-alive race: the server closes a connection the pool holds idle. Whether the
    pool notices before the next call or the call meets the closed connection, the call
    succeeds, on a new connection."""

    async def go():
        async with Server(lambda head, body: ok(), close_after=True) as s:
            pool = HttpPool(s.url, connect_timeout_s=1)
            out = []
            for i in range(4):
                out.append((await pool.request("GET", "/x", None, None, 5)).status_code)
                if i % 2:
                    await asyncio.sleep(0.05)  # let the close arrive before the next call
            await pool.close()
            return s, out

    s, out = run(go())
    assert out == [200] * 4
    assert s.connections == 4


def test_connection_close_answers_are_not_reused():
    async def go():
        async with Server(lambda head, body: ok(extra=b"Connection: close\r\n")) as s:
            pool = HttpPool(s.url, connect_timeout_s=1)
            for _ in range(2):
                assert (await pool.request("GET", "/x", None, None, 5)).status_code == 200
            await pool.close()
            return s.connections

    assert run(go()) == 2


def test_idle_connections_past_their_age_are_not_reused():
    async def go():
        async with Server(lambda head, body: ok()) as s:
            pool = HttpPool(s.url, connect_timeout_s=1, idle_s=0.05)
            await pool.request("GET", "/x", None, None, 5)
            await asyncio.sleep(0.1)
            await pool.request("GET", "/x", None, None, 5)
            await pool.close()
            return s.connections

    assert run(go()) == 2


def test_no_answer_times_out_and_the_connection_is_not_reused():
    answers = iter([None, ok()])

    async def go():
        async with Server(lambda head, body: next(answers)) as s:
            pool = HttpPool(s.url, connect_timeout_s=1)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await pool.request("POST", "/slow", b"{}", None, 0.2)
            waited = time.monotonic() - started
            reply = await pool.request("POST", "/fast", b"{}", None, 5)
            await pool.close()
            return s.connections, waited, reply.status_code

    connections, waited, status = run(go())
    assert 0.19 <= waited < 1.0
    assert (connections, status) == (2, 200)


def test_refused_connection_is_connect_failed():
    async def go():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        pool = HttpPool(f"http://127.0.0.1:{port}", connect_timeout_s=1)
        with pytest.raises(ConnectFailed, match="cannot connect"):
            await pool.request("GET", "/readyz", None, None, 5)

    run(go())


def test_hanging_up_mid_answer_is_disconnected_and_not_retried():
    async def go():
        async with Server(lambda head, body: ok(b'{"long": "body"}')[:-5], close_after=True) as s:
            pool = HttpPool(s.url, connect_timeout_s=1)
            with pytest.raises(Disconnected):
                await pool.request("POST", "/x", b"{}", None, 5)
            await pool.close()
            return len(s.requests)

    assert run(go()) == 1  # an answer had begun: the call may have been handled


def test_garbage_is_a_bad_response():
    async def go():
        async with Server(lambda head, body: b"SSH-2.0-OpenSSH_9.2\r\n\r\n") as s:
            pool = HttpPool(s.url, connect_timeout_s=1)
            with pytest.raises(BadResponse):
                await pool.request("GET", "/x", None, None, 5)
            await pool.close()

    run(go())


def test_chunked_bodies_are_joined_and_error_statuses_returned():
    chunked = (
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n"
        b"Retry-After: 7\r\n\r\n"
        b'5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'
    )

    async def go():
        async with Server(lambda head, body: chunked) as s:
            pool = HttpPool(s.url, connect_timeout_s=1)
            reply = await pool.request("GET", "/x", None, None, 5)
            again = await pool.request("GET", "/x", None, None, 5)
            await pool.close()
            return reply, again, s.connections

    reply, again, connections = run(go())
    assert reply.status_code == 503 and reply.headers["retry-after"] == "7"
    assert json.loads(reply.body) == {"a": 1}
    assert again.json() == {"a": 1} and connections == 1


def test_a_cancelled_call_leaves_the_pool_usable():
    answers = iter([None, ok()])

    async def go():
        async with Server(lambda head, body: next(answers)) as s:
            pool = HttpPool(s.url, connect_timeout_s=1)
            task = asyncio.create_task(pool.request("POST", "/x", b"{}", None, 5))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            reply = await pool.request("POST", "/x", b"{}", None, 5)
            await pool.close()
            return reply.status_code, s.connections

    assert run(go()) == (200, 2)  # the half-used connection was dropped, not reused


def test_a_closed_pool_refuses_calls_and_urls_are_checked():
    async def go():
        async with Server(lambda head, body: ok()) as s:
            pool = HttpPool(s.url, connect_timeout_s=1)
            await pool.close()
            with pytest.raises(ConnectFailed, match="closed"):
                await pool.request("GET", "/x", None, None, 5)

    run(go())
    with pytest.raises(ValueError, match="not an http"):
        HttpPool("ftp://example.org", connect_timeout_s=1)


@pytest.mark.parametrize("url", ["ftp://classifier:8001", "classifier:8001", "http://"])
def test_the_gateway_refuses_upstream_urls_it_cannot_call(monkeypatch, url):
    from pydantic import ValidationError

    from services.gateway.config import GatewaySettings

    monkeypatch.setenv("CLASSIFIER_URL", url)
    with pytest.raises(ValidationError, match="CLASSIFIER_URL"):  # the variable named
        GatewaySettings()
    monkeypatch.setenv("CLASSIFIER_URL", "https://classifier.internal:8443/v2")
    assert GatewaySettings().classifier_url.endswith("/v2")
