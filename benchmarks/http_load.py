"""Load a service over real HTTP on loopback with wrk, and read the server's memory.

wrk (Debian package) is the load generator: one client thread in C costs far less CPU than
a Python client, so the server gets the cores; its CPU share is measured and reported.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "wrk_classify.lua"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(
    args: list[str],
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    cwd: Path | None = None,
):
    """`cwd`: another checkout to run the module from (the same interpreter and packages),
    e.g. an older revision measured in the same run."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", *args, "--port", str(port)],
        cwd=cwd or REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args} exited with {proc.returncode}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"{args} not ready")
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return {"rss_mb": out.get("VmRSS", 0.0), "peak_rss_mb": out.get("VmHWM", 0.0)}


def wrk(
    url: str,
    connections: int,
    seconds: int,
    texts_file: Path,
    path: str = "/v1/classify",
    body: str = "classify",
) -> dict:
    if not shutil.which("wrk"):
        raise RuntimeError("wrk not found: apt-get install wrk")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(SCRIPT),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BENCH_TEXTS": str(texts_file), "BENCH_PATH": path, "BENCH_BODY": body},
        cwd=REPO,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    row.update(
        {
            "connections": connections,
            "throughput": row["requests"] / (row["duration_us"] / 1e6),
            "p50_ms": row["p50_us"] / 1000,
            "p95_ms": row["p95_us"] / 1000,
            "p99_ms": row["p99_us"] / 1000,
            # share of the machine's CPU the load generator used
            "client_cpu_share": cpu / wall / (os.cpu_count() or 1),
        }
    )
    return row


@contextmanager
def checkout(revision: str):
    """A throwaway work tree of `revision` (a git worktree, removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="parlance-before-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-q", str(path), revision], cwd=REPO, check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, check=False)
