"""The request ledger every service keeps for its shutdown line (services/common/middleware.py),
on a real uvicorn server on loopback: each request counted once as taken on and once as
answered, whatever its ending (a reply, a 422, a 413 refused before parsing, an unhandled
exception's 500), and probes and scrapes not at all."""

from __future__ import annotations

import threading
import time

import httpx
import uvicorn
from fastapi import APIRouter

from services.common.app import build_app
from services.common.settings import ServiceSettings
from tests.servers import free_port

router = APIRouter()
PROBES = ("/healthz", "/metrics", "/readyz")


@router.post("/v1/echo")
async def echo(body: dict) -> dict:
    return body


@router.post("/v1/boom")
async def boom() -> dict:
    raise RuntimeError("a bug in a route")


def test_every_request_is_counted_once_whatever_its_ending():
    app = build_app(
        title="ledger",
        version="1",
        settings=ServiceSettings(max_body_bytes=1024),
        lifespan=None,
        routers=[router],
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    try:
        # a connection each: uvicorn closes the one a 413 or an unhandled 500 went out on,
        # and a pooled client could send its next request into the closing socket
        codes = [
            httpx.post(f"{url}/v1/echo", json={"a": 1}, timeout=10).status_code,
            httpx.post(f"{url}/v1/echo", content=b"not json", timeout=10).status_code,
            httpx.post(f"{url}/v1/echo", json={"a": "x" * 2000}, timeout=10).status_code,
            httpx.post(f"{url}/v1/boom", timeout=10).status_code,
            httpx.get(f"{url}/no/such/route", timeout=10).status_code,
        ]
        probes = [httpx.get(url + p, timeout=10).status_code for p in PROBES]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert codes == [200, 422, 413, 500, 404]
    assert probes[:2] == [200, 200]  # /readyz: 503 here (no model), and not counted either
    assert (app.state.ledger.started, app.state.ledger.answered) == (5, 5)
    message, fields = app.state.ledger.line("requests")
    assert message == "shut down: 5 requests taken on, 5 answered"
    assert fields == {"requests_started": 5, "requests_answered": 5}
