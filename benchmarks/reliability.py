"""Reliability runs against the whole stack as local processes (services/local_stack.py,
with a persistent local Redis for sessions), all on 127.0.0.1 and bounded in time:

    python -m benchmarks.reliability load   # capacity ramp, at capacity, at 2x capacity
    python -m benchmarks.reliability faults # kill/restart generator and classifier, stop
                                            # Redis, stall an upstream, under load
    python -m benchmarks.reliability overload  # 2x capacity under several in-flight caps
    python -m benchmarks.reliability soak --minutes 10   # `make soak`: 70 % of capacity
    python -m benchmarks.reliability swap   # swap the classifier, then the generator, under
                                            # load: failed requests and the latency spike
    python -m benchmarks.reliability report # docs/reliability.md from the JSON results

Each run writes docs/reliability/<run>.json; `report` turns them into docs/reliability.md,
naming the command behind every figure. The load comes from benchmarks/loadgen.py (open
loop, fixed rate) on the same 2 cores as the stack, so figures are for the pair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.http_load import free_port, rss_mb
from benchmarks.loadgen import run_load
from benchmarks.run import machine, sample_texts
from services.local_stack import Stack

RESULTS = Path("docs/reliability")


def bodies(texts: list[str]) -> list[dict]:
    # a fresh session per request: the load measures turns, not one session's lock
    return [{"text": t, "session_id": f"load-{i}"} for i, t in enumerate(texts)]


class StackRun:
    """The stack for one run: started in a temp dir, stopped at the end."""

    def __init__(
        self,
        classifier: str,
        generator: str,
        redis: bool = True,
        gateway_env: dict[str, str] | None = None,
        classifier_env: dict[str, str] | None = None,
        generator_env: dict[str, str] | None = None,
    ):
        self.tmp = tempfile.TemporaryDirectory()
        self.stack = Stack(
            classifier,
            generator,
            port=free_port(),
            classifier_port=free_port(),
            generator_port=free_port(),
            log_dir=self.tmp.name,
            redis_port=free_port() if redis else None,
            gateway_env={
                "GATEWAY_RATE_LIMIT": "",
                "GATEWAY_LOG_LEVEL": "WARNING",
                **(gateway_env or {}),
            },
            classifier_env={"CLASSIFIER_LOG_LEVEL": "WARNING", **(classifier_env or {})},
            generator_env={"GENERATOR_LOG_LEVEL": "WARNING", **(generator_env or {})},
        )

    def __enter__(self) -> Stack:
        self.stack.start()
        return self.stack

    def __exit__(self, *exc) -> None:
        self.stack.stop()
        self.tmp.cleanup()


def load_at(
    url: str, rate: float, seconds: float, texts: list[str], timeline: bool = False, **kw
) -> dict:
    r = asyncio.run(
        run_load(url, bodies(texts), rate=rate, duration_s=seconds, label="source", **kw)
    )
    return {**r.summary(), **({"timeline": r.timeline()} if timeline else {})}


def background_load(
    url: str, texts: list[str], rate: float, seconds: float
) -> tuple[threading.Thread, dict]:
    """The open-loop chat load in a thread (started), while the caller injects a fault or
    swaps a model; the result lands in the dict's "r" once the thread is joined."""
    box: dict = {}

    def load():
        box["r"] = asyncio.run(
            run_load(url, bodies(texts), rate=rate, duration_s=seconds, label="source", timeout_s=5)
        )

    thread = threading.Thread(target=load)
    thread.start()
    return thread, box


# -- load -------------------------------------------------------------------------------------


def run_load_suite(classifier: str, generator: str, seconds: int) -> dict:
    texts = sample_texts()
    out: dict = {"ramp": []}
    with StackRun(classifier, generator) as stack:
        url = stack.gateway.url(stack.host)
        load_at(url, 10, 10, texts)  # warm-up: first use of every code path
        capacity = 0.0
        for rate in (5, 10, 15, 20, 30, 40, 60, 80, 100, 150):
            r = load_at(url, rate, seconds, texts, timeout_s=5)
            out["ramp"].append(r)
            if (
                r["errors"]
                or r["rejected_429"]
                or r["throughput"] < 0.95 * rate
                or r["p99_ms"] > 1000
            ):
                break
            capacity = rate
        out["capacity"] = capacity
        out["at_capacity"] = load_at(url, capacity, 2 * seconds, texts, timeout_s=5)
        # Twice the capacity, with a client timeout a user would tolerate: what do they see?
        out["over_capacity"] = load_at(
            url, 2 * capacity, 2 * seconds, texts, timeout_s=5, max_in_flight=1024
        )
        out["memory_mb"] = {c.name: rss_mb(c.proc.pid)["rss_mb"] for c in stack.children}
    return out


def run_overload(
    classifier: str, generator: str, rate: float, caps: list[int], seconds: int
) -> dict:
    """The same over-capacity load against gateways with different caps on turns in flight
    (GATEWAY_MAX_IN_FLIGHT): how the cap turns client timeouts into 429s."""
    texts = sample_texts()
    runs = []
    for cap in caps:
        with StackRun(
            classifier, generator, gateway_env={"GATEWAY_MAX_IN_FLIGHT": str(cap)}
        ) as stack:
            url = stack.gateway.url(stack.host)
            load_at(url, 10, 5, texts)  # warm-up
            r = load_at(url, rate, seconds, texts, timeout_s=5, max_in_flight=1024)
            runs.append({"max_in_flight": cap, **r})
    return {"rate": rate, "runs": runs}


# -- faults -----------------------------------------------------------------------------------

FORM_TURNS = ["i want to transfer money", "from checking", "to savings", "50 dollars"]


class Conversations:
    """Sessions filling the money-transfer form one turn at a time across a fault. A turn
    that fails is retried (what a client does) until it succeeds; at the end every session
    must hold all three slots: proof that no state was lost."""

    def __init__(self, url: str, sessions: int, tag: str):
        self.url = url
        self.ids = [f"{tag}-{i}" for i in range(sessions)]
        self.retries = 0
        self.final: dict[str, dict] = {}
        self.stopped = False

    def run(self, pause_s: float) -> threading.Thread:
        def go():
            with httpx.Client(base_url=self.url, timeout=5) as c:
                for turn in FORM_TURNS:
                    for sid in self.ids:
                        while not self.stopped:
                            try:
                                r = c.post("/v1/chat", json={"session_id": sid, "text": turn})
                                if r.status_code == 200:
                                    self.final[sid] = r.json()["state"]
                                    break
                            except httpx.HTTPError:
                                pass
                            self.retries += 1
                            time.sleep(0.25)
                    time.sleep(pause_s)

        t = threading.Thread(target=go, daemon=True)
        t.start()
        return t

    def complete(self) -> int:
        want = {"amount", "from_account", "to_account"}
        return sum(
            1
            for s in self.final.values()
            if s.get("active_form") == "money_transfer" and want <= set(s.get("slots", {}))
        )


def fault_scenario(
    stack: Stack,
    name: str,
    inject,
    recover,
    *,
    rate: float,
    before: float,
    down: float,
    after: float,
    texts: list[str],
) -> dict:
    url = stack.gateway.url(stack.host)
    conv = Conversations(url, 5, name.replace(" ", "-"))  # session ids: no spaces
    # the conversations' turns spread over the whole window, so some land in the fault
    thread = conv.run(pause_s=(before + down + after) / (len(FORM_TURNS) + 1))
    lt, box = background_load(url, texts, rate, before + down + after)
    time.sleep(before)
    t_fault = time.monotonic()
    inject()
    time.sleep(down)
    restart_s = recover()
    t_back = time.monotonic()
    lt.join()
    thread.join(timeout=60)
    conv.stopped = True
    r = box["r"]
    timeline = r.timeline()
    fault_sec, back_sec = int(before), int(before + (t_back - t_fault))

    def healthy(row):
        # no errors, and for a generator fault its replies are back (templates also answer
        # intents the generator never serves, so their presence says nothing)
        bad = sum(v for k, v in row.items() if k.startswith(("5", "timeout", "connect")))
        back = row.get("200:generator", 0) > 0 if name.startswith("generator") else True
        return bad == 0 and back

    recovered = next(
        (row["second"] for row in timeline if row["second"] >= back_sec and healthy(row)), None
    )
    return {
        "scenario": name,
        "rate": rate,
        "fault_at_s": before,
        "down_s": down,
        "restart_s": restart_s,
        **r.summary(),
        "timeline": timeline,
        "recovered_after_s": None if recovered is None else recovered - back_sec,
        "during_fault": _window(timeline, fault_sec, back_sec),
        "sessions": len(conv.ids),
        "sessions_complete": conv.complete(),
        "session_retries": conv.retries,
    }


def _window(timeline: list[dict], start: int, end: int) -> dict:
    total: dict = {}
    for row in timeline:
        if start <= row["second"] < end:
            for k, v in row.items():
                if k not in ("second", "p50_ms"):
                    total[k] = total.get(k, 0) + v
    return total


def run_faults(classifier: str, generator: str, rate: float) -> dict:
    texts = sample_texts()
    results = []
    with StackRun(classifier, generator) as stack:
        url = stack.gateway.url(stack.host)
        load_at(url, 10, 3, texts)
        for name, child in (("generator", stack.generator), ("classifier", stack.classifier)):
            results.append(
                fault_scenario(
                    stack,
                    name,
                    lambda c=child: stack.kill(c),
                    lambda c=child: stack.restart(c),
                    rate=rate,
                    before=5,
                    down=10,
                    after=15,
                    texts=texts,
                )
            )
        results.append(
            fault_scenario(
                stack,
                "redis",
                stack.redis.stop,
                lambda: _timed(stack.redis.start),
                rate=rate,
                before=5,
                down=5,
                after=15,
                texts=texts,
            )
        )
        for name, child in (
            ("classifier stalled", stack.classifier),
            ("generator stalled", stack.generator),
        ):
            results.append(
                fault_scenario(
                    stack,
                    name,
                    lambda c=child: stack.pause(c),
                    lambda c=child: _timed(lambda: stack.resume(c)),
                    rate=rate,
                    before=5,
                    down=5,
                    after=10,
                    texts=texts,
                )
            )
    return {"rate": rate, "scenarios": results}


def _timed(fn) -> float:
    t = time.monotonic()
    fn()
    return time.monotonic() - t


# -- soak -------------------------------------------------------------------------------------


def run_soak(classifier: str, generator: str, rate: float, minutes: float) -> dict:
    texts = sample_texts()
    samples = []
    with StackRun(classifier, generator) as stack:
        url = stack.gateway.url(stack.host)
        load_at(url, 20, 5, texts)
        stop = threading.Event()

        def sample():
            t0 = time.monotonic()
            while not stop.is_set():
                samples.append(
                    {
                        "t": time.monotonic() - t0,
                        **{c.name: rss_mb(c.proc.pid)["rss_mb"] for c in stack.children},
                    }
                )
                stop.wait(10)

        st = threading.Thread(target=sample, daemon=True)
        st.start()
        r = load_at(url, rate, minutes * 60, texts, timeline=True, timeout_s=5)
        stop.set()
        st.join()
    per_minute = []
    for m in range(int(minutes)):
        rows = [row for row in r["timeline"] if m * 60 <= row["second"] < (m + 1) * 60]
        p50s = [row["p50_ms"] for row in rows if row["p50_ms"] is not None]
        per_minute.append(
            {
                "minute": m + 1,
                "ok": sum(v for row in rows for k, v in row.items() if k.startswith("2")),
                "p50_ms": statistics.median(p50s) if p50s else None,
            }
        )
    r.pop("timeline")
    return {"rate": rate, "minutes": minutes, **r, "memory": samples, "per_minute": per_minute}


# -- report -----------------------------------------------------------------------------------


# -- swapping model versions under load --------------------------------------------------------

SWAP_KEY = "benchmark-admin-key"


def _copy_as_new_version(artifact: str, root: Path, suffix: str) -> Path:
    """The artifact again under another version: what a retrain would bring (the weights
    do not matter for the swap, the load and warm-up do)."""
    import shutil

    dst = root / (Path(artifact).name + suffix)
    shutil.copytree(artifact, dst, symlinks=True)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["version"] = f"{manifest.get('version', 'unknown')}{suffix}"
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return dst


def _latency_window(result, start: float, end: float) -> dict:
    lat = sorted(
        x for sec, xs in result.latency_per_second.items() if start <= sec < end for x in xs
    )
    if not lat:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 1)

    return {"n": len(lat), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": round(lat[-1], 1)}


def run_swap(classifier: str, generator: str, rate: float, seconds_between: float = 15) -> dict:
    """Chat turns at `rate` while the classifier and then the generator are swapped to a
    new version through their admin endpoints: what clients saw, per second and around
    each swap."""
    texts = sample_texts()
    headers = {"X-Admin-Key": SWAP_KEY}
    with tempfile.TemporaryDirectory() as tmp:
        new_classifier = _copy_as_new_version(classifier, Path(tmp), "-swapped")
        new_generator = _copy_as_new_version(generator, Path(tmp), "-swapped")
        env = {"CLASSIFIER_ADMIN_KEY": SWAP_KEY}
        with StackRun(
            classifier,
            generator,
            classifier_env=env,
            generator_env={"GENERATOR_ADMIN_KEY": SWAP_KEY},
        ) as stack:
            url = stack.gateway.url(stack.host)
            load_at(url, rate, 5, texts)  # warm-up
            duration = 3 * seconds_between
            started = time.monotonic()
            thread, box = background_load(url, texts, rate, duration)
            swaps = []
            for name, service, artifact in (
                ("classifier", stack.classifier, new_classifier),
                ("generator", stack.generator, new_generator),
            ):
                time.sleep(
                    max(0.0, started + seconds_between * (len(swaps) + 1) - time.monotonic())
                )
                t0 = time.monotonic() - started
                r = httpx.post(
                    service.url(stack.host) + "/admin/model",
                    json={"artifact": str(artifact)},
                    headers=headers,
                    timeout=300,
                )
                t1 = time.monotonic() - started
                swaps.append(
                    {
                        "service": name,
                        "status": r.status_code,
                        "requested_at_s": round(t0, 2),
                        "switched_at_s": round(t1, 2),
                        **r.json(),
                    }  # fmt: skip
                )
            thread.join()
            result = box["r"]
            versions = {
                name: httpx.get(svc.url(stack.host) + "/v1/model").json()["version"]
                for name, svc in (("classifier", stack.classifier), ("generator", stack.generator))
            }
    first = swaps[0]["requested_at_s"]
    for swap in swaps:
        # from the request to 2 s after the switch: loading, warm-up and the old version's
        # last batches all fall in it
        swap["during"] = _latency_window(result, swap["requested_at_s"], swap["switched_at_s"] + 2)
    return {
        "rate": rate,
        "duration_s": duration,
        **result.summary(),
        "before": _latency_window(result, 1, first),
        "swaps": swaps,
        "served_after": versions,
        "timeline": result.timeline(),
    }


def write(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "written": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        **data,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", choices=["load", "overload", "faults", "soak", "swap", "report"])
    p.add_argument("--classifier-artifact", default="artifacts/classifier")
    p.add_argument("--generator-artifact", default="artifacts/generator")
    p.add_argument("--seconds", type=int, default=10, help="load: seconds per ramp step")
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="faults/soak/swap: turns/s (default: from the load run's capacity)",
    )
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--caps", default="256,64,24", help="overload: GATEWAY_MAX_IN_FLIGHT values")
    p.add_argument(
        "--save-as",
        default=None,
        help="results file name (default: the run's); the report reads load-torch-generator "
        "beside load: GENERATOR_BACKEND=torch ... load --save-as load-torch-generator",
    )
    args = p.parse_args(argv)
    if args.run == "report":
        from benchmarks.reliability_report import write_report

        write_report(RESULTS, Path("docs/reliability.md"))
        return
    common = (args.classifier_artifact, args.generator_artifact)
    capacity = None
    load_file = RESULTS / "load.json"
    if load_file.exists():
        capacity = json.loads(load_file.read_text())["capacity"]
    if args.run == "load":
        data = run_load_suite(*common, args.seconds)
    elif args.run == "overload":
        data = run_overload(
            *common,
            args.rate or 2 * (capacity or 20),
            [int(c) for c in args.caps.split(",")],
            2 * args.seconds,
        )
    elif args.run == "faults":
        data = run_faults(*common, args.rate or max(10.0, 0.5 * (capacity or 50)))
    elif args.run == "swap":
        data = run_swap(*common, args.rate or max(10.0, 0.5 * (capacity or 20)))
    else:
        data = run_soak(*common, args.rate or max(10.0, 0.7 * (capacity or 50)), args.minutes)
    data["artifacts"] = {"classifier": common[0], "generator": common[1]}
    print(write(args.save_as or args.run, data))


if __name__ == "__main__":
    main()
