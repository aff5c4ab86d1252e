"""Webhook actions under load, and after the back-end restarts (docs/reliability.md).

A gateway in front of the stand-in classifier (the point is the action path, not the model)
with a copy of the CLINC150 pack whose balance intent calls a benchmark back-end
(benchmarks/slow_backend.py) that takes SLOW_BACKEND_DELAY_S per call. Closed-loop clients
(one session each) ask for their balance for a fixed time; every reply is classified by the
chat response's `action.outcome`.

    python -m benchmarks.actions [--seconds 15] [--output docs/reliability/actions.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from benchmarks.http_load import REPO, free_port, server

SECRET = "benchmark-secret"


def pack_copy(tmp: Path, backend_url: str, timeout_s: float) -> Path:
    root = tmp / "clinc"
    shutil.copytree(REPO / "assistants" / "clinc150", root, ignore=shutil.ignore_patterns("tests"))
    actions = {
        "account_balance": {
            "url": backend_url + "/actions/account_balance",
            "secret": "${PARLANCE_ACTION_SECRET}",
            "timeout_s": timeout_s,
            "retries": 1,
            "facts": ["balance"],
            "allow_private_network": True,
        }
    }
    (root / "actions.yml").write_text(yaml.safe_dump({"actions": actions}))
    return root


async def load(url: str, clients: int, seconds: float) -> list[tuple[float, float, str]]:
    """(start offset, latency, outcome) of every turn."""
    out: list[tuple[float, float, str]] = []
    t0 = time.perf_counter()

    async def client(i: int, http: httpx.AsyncClient):
        while (now := time.perf_counter()) - t0 < seconds:
            try:
                r = await http.post("/v1/chat", json={"session_id": f"b{i}", "text": "my balance"})
                body = r.json()
                outcome = (body.get("action") or {}).get("outcome", f"http_{r.status_code}")
                reason = (body.get("action") or {}).get("reason")
                outcome = f"{outcome}:{reason}" if reason else outcome
            except httpx.HTTPError as e:
                outcome = type(e).__name__
            out.append((now - t0, time.perf_counter() - now, outcome))

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        await asyncio.gather(*[client(i, http) for i in range(clients)])
    return out


def summary(rows: list[tuple[float, float, str]], seconds: float) -> dict:
    lat = sorted(r[1] for r in rows)
    outcomes: dict[str, int] = {}
    for r in rows:
        outcomes[r[2]] = outcomes.get(r[2], 0) + 1
    return {
        "turns": len(rows),
        "turns_per_s": round(len(rows) / seconds, 1),
        "p50_ms": round(1e3 * statistics.median(lat), 1),
        "p99_ms": round(1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
        "outcomes": outcomes,
    }


def gateway_env(classifier: str, pack: Path) -> dict[str, str]:
    return {
        "CLASSIFIER_URL": classifier,
        "GENERATOR_URL": f"http://127.0.0.1:{free_port()}",
        "PARLANCE_PACK": str(pack),
        "PARLANCE_ACTION_SECRET": SECRET,
        "GATEWAY_RATE_LIMIT": "",
        "GATEWAY_MAX_IN_FLIGHT": "256",
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--output", default=str(REPO / "docs" / "reliability" / "actions.json"))
    args = p.parse_args(argv)
    results: dict = {"seconds": args.seconds}
    with tempfile.TemporaryDirectory() as tmp, server(["tests.standin_classifier"]) as (clf, _):
        for delay, clients in ((0.2, 16), (0.2, 64), (3.0, 16)):
            backend_env = {"PARLANCE_ACTION_SECRET": SECRET, "SLOW_BACKEND_DELAY_S": str(delay)}
            with server(["benchmarks.slow_backend"], backend_env) as (backend, _):
                pack = pack_copy(Path(tmp) / f"{delay}-{clients}", backend, timeout_s=2.0)
                with server(["services.gateway"], gateway_env(clf, pack)) as (gw, _):
                    rows = asyncio.run(load(gw, clients, args.seconds))
            results[f"delay_{delay}s_clients_{clients}"] = summary(rows, args.seconds)
        # Recovery: the back-end is down for a while, then starts again on the same port.
        port = free_port()
        pack = pack_copy(Path(tmp) / "restart", f"http://127.0.0.1:{port}", timeout_s=2.0)
        with server(["services.gateway"], gateway_env(clf, pack)) as (gw, _):

            async def run_all():
                task = asyncio.create_task(load(gw, 8, args.seconds + 10))
                await asyncio.sleep(5)
                proc = subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.slow_backend", "--port", str(port)],
                    cwd=REPO,
                    env={**os.environ, "PARLANCE_ACTION_SECRET": SECRET},
                )
                restarted = time.perf_counter()
                rows = await task
                proc.terminate()
                return rows, restarted

            t0 = time.perf_counter()
            rows, restarted = asyncio.run(run_all())
        restart_at = restarted - t0
        ok_after = [r[0] for r in rows if r[2] == "ok" and r[0] >= restart_at]
        results["restart"] = {
            **summary(rows, args.seconds + 10),
            "backend_started_at_s": round(restart_at, 2),
            "first_ok_after_start_s": round(min(ok_after) - restart_at, 2) if ok_after else None,
            "failed_while_down": sum(1 for r in rows if r[0] < restart_at and r[2] != "ok"),
        }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
