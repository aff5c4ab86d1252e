"""`make demo` as a user runs it (non-interactively): it reuses existing artifacts, starts the
three services as local processes, prints the chat page URL, answers a real chat turn, and
stops everything on Ctrl-C (SIGINT to the foreground process group, as a terminal sends)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from services.local_stack import port_in_use
from tests.servers import REPO

pytestmark = pytest.mark.slow


def free_port_run(n: int = 4) -> int:
    """A port p with p..p+n-1 all free (the demo uses p, p+1, p+2, and p+3 for the example
    action back-end), below Linux's ephemeral range: a port from that range can be taken
    by any outgoing connection between this check and the service's bind (seen: a
    classifier that exited with "address in use")."""
    import random

    rng = random.Random()
    for _ in range(200):
        p = rng.randrange(20000, 32000 - n)
        if not any(port_in_use("127.0.0.1", p + i) for i in range(n)):
            return p
    raise RuntimeError("no free port run")


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline and int(entry.name) != os.getpid():
                found.append(int(entry.name))
    return found


def lines_of(proc: subprocess.Popen) -> queue.Queue:
    q: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def read_until(q: queue.Queue, marker: str, timeout: float, seen: list[str]) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if marker in line:
            return line
    raise AssertionError(f"{marker!r} not printed; output:\n{''.join(seen)[-4000:]}")


def test_make_demo_serves_a_real_chat_reply_and_stops_on_ctrl_c(
    small_artifact, small_generator, tmp_path
):
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "classifier").symlink_to(small_artifact)
    (artifacts / "generator").symlink_to(small_generator)
    port = free_port_run()
    # A loaded CI machine can take the generator's first reply past the gateway's 2 s budget,
    # and the reply would then (rightly) say `template`: this test is about the demo's wiring.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GATEWAY_GENERATOR_TIMEOUT_S": "10"}
    env.pop("PARLANCE_ACTION_SECRET", None)  # no back-end of our own: the demo brings one
    proc = subprocess.Popen(
        [
            "make",
            "--no-print-directory",
            "demo",
            f"ARTIFACTS={artifacts}",
            f"DEMO_PORT={port}",
            f"VENV={Path(sys.executable).parents[1]}",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )  # its own process group: the SIGINT below reaches make + demo
    seen: list[str] = []
    try:
        q = lines_of(proc)
        # reuses the artifacts (no training) and prints their test-split quality
        read_until(q, "in-scope accuracy", 60, seen)
        line = read_until(q, "chat page", 120, seen)
        url = line.split()[-1]
        assert url == f"http://127.0.0.1:{port}/"
        assert not any("training the" in s for s in seen)
        # a short status, not a log line per readiness poll
        assert not any("HTTP Request" in s for s in seen), seen

        page = httpx.get(url, timeout=5)
        assert page.status_code == 200 and "<html" in page.text.lower()
        r = httpx.post(
            url + "v1/chat",
            json={"session_id": "demo-test", "text": "start a timer for 10 minutes"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["intent"]["raw"] == "timer" and body["source"] == "generator"
        assert "10 minutes" in body["reply"]
        # the pack's balance action: the demo runs the example back-end with a fresh secret
        r = httpx.post(
            url + "v1/chat",
            json={"session_id": "demo-bal", "text": "what's my balance"},
            timeout=30,
        ).json()
        assert r["intent"]["raw"] == "balance", r
        assert r["action"] == {"name": "account_balance", "outcome": "ok"}, r
        assert "$1,250.00" in r["reply"]

        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        proc.wait(timeout=60)
        read_until(q, "stopped.", 5, seen)
    finally:
        if proc.poll() is None:
            # After a failed assertion: Ctrl-C first, so the supervisor stops the services
            # (they run in sessions of their own, out of reach of a SIGKILL to this group).
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for p in (port, port + 1, port + 2, port + 3):
        assert not port_in_use("127.0.0.1", p), f"port {p} still served after Ctrl-C"
    assert processes_mentioning(str(artifacts)) == []
    assert (artifacts / "logs" / "gateway.log").is_file()


def test_a_service_that_cannot_start_stops_the_stack_with_its_log(small_artifact, tmp_path):
    port = free_port_run()
    bogus = tmp_path / "not-a-generator"
    bogus.mkdir()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.local_stack",
            "--classifier-artifact",
            str(small_artifact),
            "--generator-artifact",
            str(bogus),
            "--port",
            str(port),
            "--classifier-port",
            str(port + 1),
            "--generator-port",
            str(port + 2),
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert "generator exited" in r.stderr and "manifest.json" in r.stderr
    for p in (port, port + 1, port + 2, port + 3):
        assert not port_in_use("127.0.0.1", p)
    assert processes_mentioning(str(small_artifact)) == []


def test_ports_in_use_are_refused_before_anything_starts(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "services.local_stack",
                "--classifier-artifact",
                "x",
                "--generator-artifact",
                "y",
                "--port",
                str(busy),
                "--log-dir",
                str(tmp_path),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 1
    assert f"gateway port {busy}" in r.stderr and "already in use" in r.stderr
