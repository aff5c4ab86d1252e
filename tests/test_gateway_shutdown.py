"""SIGTERM with work in flight. A real gateway process in front of the stand-in classifier
(the point is the gateway's own shutdown, not the model): every turn it took on is answered
before it exits, and its last log line says how many it took on and answered. A real
classifier process under load: the same for its requests (the line every model service logs)."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from tests.servers import clients_posting, free_port, running


def shutdown_line(log_text: str, unit: str = "turns") -> dict:
    """The last shutdown line of a service's JSON log: `unit`_started and `unit`_answered
    (turns for the gateway, requests for the model services)."""
    for line in reversed(log_text.splitlines()):
        if f'"{unit}_started"' in line:
            return json.loads(line)
    raise AssertionError(f"no shutdown line ({unit}) in the log:\n" + log_text[-3000:])


def test_sigterm_answers_the_turns_in_flight_then_says_so(standin, tmp_path):
    env = {
        "CLASSIFIER_URL": standin.url,
        "GENERATOR_URL": f"http://127.0.0.1:{free_port()}",
        "GATEWAY_RATE_LIMIT": "",
        "GATEWAY_CLASSIFIER_TIMEOUT_S": "10",
    }
    replies: list[httpx.Response] = []
    with running(["services.gateway"], env, tmp_path, ready_path="/healthz") as gw:
        quick = httpx.post(f"{gw.url}/v1/chat", json={"session_id": "q", "text": "hi"}, timeout=10)
        assert quick.status_code == 200, quick.text

        def slow_turn(i: int) -> None:
            # the stand-in answers `##slow` texts after 3 s: in flight when SIGTERM lands
            body = {"session_id": f"s{i}", "text": f"what time is it ##slow {i}"}
            replies.append(httpx.post(f"{gw.url}/v1/chat", json=body, timeout=30))

        threads = [threading.Thread(target=slow_turn, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        stopped_at = time.perf_counter()
        gw.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join()
        code = gw.proc.wait(timeout=30)
        took = time.perf_counter() - stopped_at
        log = gw.log.read_text()
    # uvicorn re-raises the SIGTERM once it has shut down, so a plain process ends by the
    # signal (as PID 1 in a container, where it is ignored, it exits 0)
    assert code in (0, -signal.SIGTERM), log[-3000:]
    assert "Application shutdown complete" in log
    assert [r.status_code for r in replies] == [200] * 4, [r.text for r in replies]
    assert all(r.json()["reply"] for r in replies)
    assert took >= 1.5  # it waited for the classifier's answers instead of cutting them off
    line = shutdown_line(log)
    assert line["turns_started"] == line["turns_answered"] == 5, line


@pytest.mark.slow  # trains the small artifact
def test_a_model_service_answers_its_requests_in_flight_then_says_so(small_artifact, tmp_path):
    env = {"CLASSIFIER_ARTIFACT": str(small_artifact)}

    def body(i: int, k: int) -> dict:
        return {"texts": [f"set a timer {i}"]}

    with running(["services.classifier"], env, tmp_path) as clf:
        with clients_posting(f"{clf.url}/v1/classify", body, n=4) as statuses:
            time.sleep(1.0)
            clf.proc.send_signal(signal.SIGTERM)
            code = clf.proc.wait(timeout=30)
        log = clf.log.read_text()
    assert code in (0, -signal.SIGTERM), log[-3000:]
    line = shutdown_line(log, "requests")
    assert statuses.count(200) > 10
    assert line["requests_started"] == line["requests_answered"], line
    # each request taken on reached its client; the readiness probes are not counted
    assert statuses.count(200) == line["requests_started"], (statuses, line)
    assert set(statuses) <= {200, "refused", "RemoteProtocolError", "ReadError"}, statuses
