"""Bounded HTTP load from one async httpx client, for the load, soak and fault runs.

Open loop: requests are sent at a fixed rate whatever the server does (real traffic keeps
arriving when a server slows down; a closed loop of N clients would politely wait and hide
queueing). Bounded everywhere: a fixed duration, a per-request timeout, and a cap on
requests in flight (beyond it a request is counted as `client_dropped`, not sent), so a
stalled server cannot make the client grow without limit.

Each response is recorded as (second, outcome, latency): outcome is the status code, or
`timeout` / `connect_error` / `client_dropped`; errors as `<status>:<error code>` (e.g.
`503:upstream_unavailable`); with `label` set (a JSON field such as the gateway's `source`),
200s are recorded as `200:<value>` so fallbacks are visible.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class LoadResult:
    rate: float
    duration_s: float
    outcomes: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)  # 2xx only
    per_second: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))
    latency_per_second: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))

    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())

    def count(self, pred: Callable[[str], bool]) -> int:
        return sum(n for k, n in self.outcomes.items() if pred(str(k)))

    @property
    def ok(self) -> int:
        return self.count(lambda k: k.startswith("2"))

    @property
    def rejected_429(self) -> int:
        return self.count(lambda k: k.startswith("429"))

    @property
    def errors(self) -> int:
        """What a client would call a failure: 5xx, timeouts, connection errors."""
        return self.count(lambda k: k.startswith("5") or k in ("timeout", "connect_error"))

    def percentile(self, q: float, values: list[float] | None = None) -> float:
        v = sorted(self.latencies_ms if values is None else values)
        if not v:
            return float("nan")
        return v[min(len(v) - 1, int(q * len(v)))]

    def summary(self) -> dict:
        return {
            "rate": self.rate,
            "duration_s": self.duration_s,
            "sent": self.sent,
            "ok": self.ok,
            "throughput": self.ok / self.duration_s,
            "rejected_429": self.rejected_429,
            "errors": self.errors,
            "error_rate": self.errors / max(1, self.sent),
            "p50_ms": self.percentile(0.50),
            "p95_ms": self.percentile(0.95),
            "p99_ms": self.percentile(0.99),
            "outcomes": dict(sorted((str(k), v) for k, v in self.outcomes.items())),
        }

    def timeline(self) -> list[dict]:
        """Per second: outcome counts and the p50 of that second's 2xx latencies."""
        rows = []
        for sec in sorted(self.per_second):
            lat = self.latency_per_second.get(sec, [])
            rows.append(
                {
                    "second": sec,
                    **dict(self.per_second[sec]),
                    "p50_ms": statistics.median(lat) if lat else None,
                }
            )
        return rows


async def run_load(
    url: str,
    bodies: list[dict],
    *,
    rate: float,
    duration_s: float,
    path: str = "/v1/chat",
    timeout_s: float = 10.0,
    max_in_flight: int = 512,
    headers: dict[str, str] | None = None,
    label: str | None = None,
    body_for: Callable[[int], dict] | None = None,
) -> LoadResult:
    result = LoadResult(rate=rate, duration_s=duration_s)
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=64)
    in_flight = 0
    started = time.perf_counter()

    async with httpx.AsyncClient(
        base_url=url, timeout=timeout_s, limits=limits, headers=headers
    ) as client:

        async def one(i: int) -> None:
            nonlocal in_flight
            body = body_for(i) if body_for else bodies[i % len(bodies)]
            t = time.perf_counter()
            sec = int(t - started)
            try:
                r = await client.post(path, json=body)
                outcome = str(r.status_code)
                if r.status_code == 200 and label:
                    outcome += f":{r.json().get(label)}"
                elif r.status_code >= 400:
                    outcome += f":{_error_code(r)}"
                ms = (time.perf_counter() - t) * 1000
                if 200 <= r.status_code < 300:
                    result.latencies_ms.append(ms)
                    result.latency_per_second[sec].append(ms)
            except httpx.TimeoutException:
                outcome = "timeout"
            except httpx.TransportError:
                outcome = "connect_error"
            finally:
                in_flight -= 1
            result.outcomes[outcome] += 1
            result.per_second[sec][outcome] += 1

        tasks = set()
        total = int(rate * duration_s)
        for i in range(total):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= max_in_flight:
                result.outcomes["client_dropped"] += 1
                result.per_second[int(time.perf_counter() - started)]["client_dropped"] += 1
                continue
            in_flight += 1
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s + 5)
    return result


def _error_code(r: httpx.Response) -> str:
    try:
        return r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "no_error_body"


def run(url: str, bodies: list[dict], **kwargs) -> LoadResult:
    return asyncio.run(run_load(url, bodies, **kwargs))
