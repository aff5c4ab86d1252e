"""Faults under load, on the real stack as local processes (small artifacts trained in the
session, a real persistent redis-server for sessions): what clients see when the generator
or the classifier is killed and restarted, when Redis stops, and when an upstream stalls.
Bounded: a few turns per second for a few seconds each. The full-size figures are in
docs/reliability.md (`python -m benchmarks.reliability faults`)."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from benchmarks.loadgen import run_load
from services.local_stack import Stack
from tests.servers import free_port

pytestmark = pytest.mark.slow

BODIES = [{"text": "set a timer for 5 minutes"}, {"text": "hello there"}]


@pytest.fixture(scope="module")
def stack(small_artifact, small_generator, tmp_path_factory):
    import shutil

    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not found: apt-get install redis-server")
    s = Stack(
        str(small_artifact),
        str(small_generator),
        port=free_port(),
        classifier_port=free_port(),
        generator_port=free_port(),
        log_dir=tmp_path_factory.mktemp("faults"),
        redis_port=free_port(),
        gateway_env={"GATEWAY_RATE_LIMIT": "", "GATEWAY_BREAKER_RESET_S": "3"},
    )
    s.start()
    yield s
    s.stop()


def load_in_background(url: str, rate: float, seconds: float) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def go():
        box["r"] = asyncio.run(
            run_load(url, BODIES, rate=rate, duration_s=seconds, label="source", timeout_s=5)
        )

    t = threading.Thread(target=go)
    t.start()
    return t, box


def kill_and_restart_under_load(stack, child, seconds: float, down: float):
    """8 turns/s for `seconds`; `child` is SIGKILLed 2 s in and restarted `down` s later."""
    thread, box = load_in_background(stack.gateway.url(stack.host), rate=8, seconds=seconds)
    time.sleep(2)
    stack.kill(child)
    time.sleep(down)
    stack.restart(child)
    thread.join()
    return box["r"]


def say(url: str, text: str, session: str | None = None) -> httpx.Response:
    body = {"text": text, **({"session_id": session} if session else {})}
    return httpx.post(url + "/v1/chat", json=body, timeout=10)


def wait_for(pred, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(f"not recovered within {timeout} s")


def test_load_within_capacity_is_answered_without_errors(stack):
    url = stack.gateway.url(stack.host)
    # every turn here goes through the generator, the slow path (~10 replies/s per core)
    r = asyncio.run(run_load(url, BODIES, rate=5, duration_s=6, label="source", timeout_s=5))
    s = r.summary()
    assert s["errors"] == 0 and s["rejected_429"] == 0, s["outcomes"]
    # Every turn answered within the client's timeout; how fast is the benchmarks' job
    # (docs/reliability.md), not an assertion that a busy CI machine can miss.
    assert s["ok"] == s["sent"] == 30, s


def test_beyond_capacity_means_fast_429s_not_timeouts(stack, tmp_path):
    from tests.servers import running

    env = {
        "CLASSIFIER_URL": stack.classifier.url(stack.host),
        "GATEWAY_RATE_LIMIT": "",
        "GENERATOR_URL": stack.generator.url(stack.host),
        "GATEWAY_MAX_IN_FLIGHT": "4",
    }
    with running(["services.gateway"], env, tmp_path) as gw:
        r = asyncio.run(run_load(gw.url, BODIES, rate=150, duration_s=3, timeout_s=5))
        s = r.summary()
        # far past what 2 cores answer: the excess is refused at once, nothing times out
        assert set(s["outcomes"]) <= {"200", "429:overloaded"}, s["outcomes"]
        assert s["rejected_429"] > 0 and s["ok"] > 0

        async def burst():
            async with httpx.AsyncClient(timeout=10) as c:
                return await asyncio.gather(
                    *[c.post(gw.url + "/v1/chat", json=BODIES[0]) for _ in range(30)]
                )

        refused = [x for x in asyncio.run(burst()) if x.status_code == 429]
        assert refused, "30 concurrent turns against a cap of 4: some must be refused"
        for x in refused:
            assert x.json()["error"]["code"] == "overloaded"
            assert int(x.headers["retry-after"]) >= 1
        metrics = httpx.get(gw.url + "/metrics").text
        assert "parlance_gateway_overloaded_total" in metrics


def test_generator_killed_and_restarted_under_load(stack):
    url = stack.gateway.url(stack.host)
    # a healthy start: the overload test before may have left the generator a backlog
    wait_for(
        lambda: say(url, "set a timer for 5 minutes").json()["source"] == "generator", timeout=30
    )
    r = kill_and_restart_under_load(stack, stack.generator, seconds=10, down=3)
    # every turn answered: template replies while the generator was gone, no errors
    assert r.errors == 0 and r.rejected_429 == 0, r.summary()
    assert r.outcomes["200:template"] > 0, r.outcomes
    # and the generator answers again once it is ready (the gateway then closes its breaker)
    wait_for(
        lambda: say(url, "set a timer for 5 minutes").json()["source"] == "generator", timeout=20
    )


def test_classifier_killed_and_restarted_under_load(stack):
    url = stack.gateway.url(stack.host)
    r = kill_and_restart_under_load(stack, stack.classifier, seconds=8, down=2)
    # while it was down: fast 503s (no timeouts, no connection errors at the client)
    assert set(r.outcomes) <= {"200:generator", "200:template", "503:upstream_unavailable"}, (
        r.outcomes
    )
    assert r.outcomes["503:upstream_unavailable"] > 0
    wait_for(lambda: say(url, "hello there").status_code == 200, timeout=20)
    assert httpx.get(url + "/readyz").status_code == 200


def test_redis_stopped_then_started_loses_no_session_state(stack):
    url = stack.gateway.url(stack.host)
    r = say(url, "book a flight from boston", "faults-redis")
    assert r.json()["state"]["slots"] == {"origin": "Boston"}
    stack.redis.stop()
    try:
        r = say(url, "to tokyo", "faults-redis")
        assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unavailable"
        assert "session store" in r.json()["error"]["message"]
        wait_for(lambda: httpx.get(url + "/readyz").status_code == 503, timeout=5)
    finally:
        stack.redis.start()
    wait_for(lambda: httpx.get(url + "/readyz").status_code == 200, timeout=10)
    r = say(url, "to tokyo", "faults-redis")  # the client retries the refused turn
    assert r.status_code == 200
    assert r.json()["state"]["slots"] == {"origin": "Boston", "destination": "Tokyo"}


def turn_while_stalled(stack, child, text: str) -> tuple[httpx.Response, float]:
    """One turn while `child` is SIGSTOPped (accepting connections, answering nothing)."""
    stack.pause(child)
    try:
        t0 = time.monotonic()
        r = say(stack.gateway.url(stack.host), text)
        return r, time.monotonic() - t0
    finally:
        stack.resume(child)


def test_a_stalled_classifier_costs_a_bounded_wait_not_a_hang(stack):
    r, waited = turn_while_stalled(stack, stack.classifier, "hello there")
    assert r.status_code == 503 and waited < 4.0  # the classifier timeout (2 s) + slack
    url = stack.gateway.url(stack.host)
    wait_for(lambda: say(url, "hello there").status_code == 200, timeout=15)


def test_a_stalled_generator_means_template_replies_in_bounded_time(stack):
    r, waited = turn_while_stalled(stack, stack.generator, "set a timer for 5 minutes")
    assert r.status_code == 200 and r.json()["source"] == "template"
    assert "5 minutes" in r.json()["reply"] and waited < 4.0
