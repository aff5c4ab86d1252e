"""Deliberately bad back-ends for webhook actions, over real HTTP on loopback: a raw asyncio
TCP server (so it can misbehave in ways a web framework will not: close mid-request, lie
about the content type, send a megabyte), run in a thread of the test process.

The path picks the behaviour: /slow, /500, /close, /badjson, /html, /huge, /gzip (a false
Content-Encoding), /deep (JSON nested past the parser's recursion limit), /ok,
/flaky (500 until `heal()`), /slow-first (acts, then answers after 3 s the first time a key
is seen, at once afterwards). Every request is recorded (path, headers, body).
"""

from __future__ import annotations

import asyncio
import json
import threading


class BadServer:
    def __init__(self):
        self.requests: list[dict] = []
        self.healthy = False
        self.seen_keys: set[str] = set()
        self.loop = asyncio.new_event_loop()
        self.server = None
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0)
            )
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def heal(self) -> None:
        self.healthy = True

    def hits(self, path: str) -> int:
        return sum(1 for r in self.requests if r["path"] == path)

    async def _handle(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {
                k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if x)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append({"path": path, "headers": headers, "body": body})
            await self._respond(path, headers, body, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _respond(self, path, headers, body, writer):
        def send(status: str, content: bytes, ctype: str = "application/json"):
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n".encode()
                + content
            )

        ok = json.dumps({"facts": {"balance": "$1.00"}}).encode()
        if path == "/slow":
            await asyncio.sleep(5)
            send("200 OK", ok)
        elif path == "/500":
            send("500 Internal Server Error", b'{"detail": "boom"}')
        elif path == "/close":
            return  # closed without a word
        elif path == "/badjson":
            send("200 OK", b"{not json")
        elif path == "/html":
            send("200 OK", b"<html>hello</html>", "text/html")
        elif path == "/huge":
            send("200 OK", b'{"reply": "' + b"x" * 1_000_000 + b'"}')
        elif path == "/gzip":  # says gzip, is not
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Encoding: gzip\r\nContent-Length: 9\r\nConnection: close\r\n\r\n"
                b"not gzip!"
            )
        elif path == "/deep":
            send("200 OK", b"[" * 50_000)
        elif path == "/flaky":
            if self.healthy:
                send("200 OK", ok)
            else:
                send("503 Service Unavailable", b"{}")
        elif path == "/slow-first":
            key = headers.get("idempotency-key", "")
            first = key not in self.seen_keys
            self.seen_keys.add(key)
            if first:
                await asyncio.sleep(3)
            send("200 OK", json.dumps({"facts": {"reference": "TX-1"}}).encode())
        else:
            send("200 OK", ok)
        await writer.drain()

    def close(self) -> None:
        async def shutdown():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
