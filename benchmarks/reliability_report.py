"""docs/reliability.md from the JSON results of `python -m benchmarks.reliability`."""

from __future__ import annotations

import json
from pathlib import Path


def _load(results: Path, name: str) -> dict | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _outcomes(o: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(o.items(), key=lambda kv: -kv[1]))


def load_section(d: dict, torch_generator: dict | None = None) -> list[str]:
    lines = [
        "## Load",
        "",
        f"`python -m benchmarks.reliability load` ({d['written']}; {d['machine']}). An "
        "open-loop client (benchmarks/loadgen.py) sends `POST /v1/chat` turns at a fixed "
        "rate, each a CLINC150 test query in a fresh session (generated replies, "
        "templates, forms and out-of-scope fallbacks in their natural mix), to the "
        "whole stack as local processes with a Redis session store; client timeout 5 s. "
        "The client runs on the same 2 cores as the stack.",
        "",
        "| offered turns/s | answered 2xx/s | p50 ms | p95 ms | p99 ms | 429 | "
        "errors (5xx, timeouts) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in d["ramp"]:
        lines.append(
            f"| {r['rate']:.0f} | {r['throughput']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['rejected_429']} | "
            f"{r['errors']} |"
        )
    at, over = d["at_capacity"], d["over_capacity"]
    lines += [
        "",
        f"Capacity (the highest step with no error, no 429, >= 95 % answered and p99 "
        f"under 1 s): **{d['capacity']:.0f} turns/s**.",
        "",
    ]
    if torch_generator:
        # the same ramp with the generator on torch `generate` (its path before the ONNX
        # decoder): GENERATOR_BACKEND=torch python -m benchmarks.reliability load
        # --save-as load-torch-generator
        ramp = {r["rate"]: r for r in torch_generator["ramp"]}
        cap = torch_generator["capacity"]
        lines += [
            f"The same ramp with the generator on torch `generate` (`GENERATOR_BACKEND=torch "
            f"python -m benchmarks.reliability load --save-as load-torch-generator`, "
            f"{torch_generator['written']}): capacity "
            f"**{cap:.0f} turns/s**, p99 {ramp[cap]['p99_ms']:.0f} ms at it.",
            "",
        ]
    lines += [
        "| run | offered/s | seconds | sent | 2xx | 429 | errors | error rate | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in (("at capacity", at), ("2x capacity", over)):
        lines.append(
            f"| {name} | {r['rate']:.0f} | {r['duration_s']:.0f} | {r['sent']} | "
            f"{r['ok']} | {r['rejected_429']} | {r['errors']} | "
            f"{r['error_rate']:.2%} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    lines += [
        "",
        f"At 2x capacity, all outcomes: {_outcomes(over['outcomes'])}.",
        "Resident memory after the runs (MB): "
        + ", ".join(f"{k} {v:.0f}" for k, v in d["memory_mb"].items())
        + ".",
        "",
    ]
    return lines


def overload_section(d: dict) -> list[str]:
    lines = [
        "## Overload: the cap on turns in flight",
        "",
        f"`python -m benchmarks.reliability overload` ({d['written']}): "
        f"{d['rate']:.0f} turns/s (twice the capacity above) for "
        f"{d['runs'][0]['duration_s']:.0f} s against a fresh stack per "
        "`GATEWAY_MAX_IN_FLIGHT` value; client timeout 5 s.",
        "",
        "| max in flight | answered 2xx | 429 | client timeouts | other errors | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in d["runs"]:
        timeouts = r["outcomes"].get("timeout", 0)
        lines.append(
            f"| {r['max_in_flight']} | {r['ok']} | {r['rejected_429']} | {timeouts} | "
            f"{r['errors'] - timeouts} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    return lines + ["", "The default is 24 (docs/gateway.md).", ""]


def faults_section(d: dict) -> list[str]:
    lines = [
        "## Faults",
        "",
        f"`python -m benchmarks.reliability faults` ({d['written']}). Each scenario runs "
        f"under {d['rate']:.0f} turns/s of the load above, while five sessions fill the "
        "money-transfer form one turn at a time (a refused turn is retried, as a client "
        "would); the fault starts 5 s in. Kill = SIGKILL, then a restart; stall = "
        "SIGSTOP, then SIGCONT; Redis is stopped and started again (append-only file, "
        'fsync every write). "Recovered" = seconds from the restart (or resume) to '
        "the first second with no error (and, for a generator fault, with generated "
        "replies again).",
        "",
        "| scenario | down s | restart s | what clients saw during the fault | 2xx | "
        "errors | recovered after s | sessions with all slots |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in d["scenarios"]:
        rec = "-" if s["recovered_after_s"] is None else f"{s['recovered_after_s']}"
        lines.append(
            f"| {s['scenario']} | {s['down_s']} | {s['restart_s']:.1f} | "
            f"{_outcomes(s['during_fault'])} | {s['ok']} | {s['errors']} | {rec} | "
            f"{s['sessions_complete']}/{s['sessions']} |"
        )
    lines += [
        "",
        "Outcome keys: `200:<source>` is a normal answer and where the reply came "
        "from (`generator`, `template`, `fallback`, `fulfilment`); "
        "`503:upstream_unavailable` is a fast refusal with a JSON error saying to retry "
        "shortly; `timeout` is a client that waited 5 s for nothing: "
        f"{sum(s['outcomes'].get('timeout', 0) for s in d['scenarios'])} in these runs.",
        "",
    ]
    return lines


def soak_section(d: dict) -> list[str]:
    mem = d["memory"]
    first, last = mem[0], mem[-1]
    settled = next((m for m in mem if m["t"] >= 120), first)  # caches fill in the first minutes
    names = [k for k in first if k != "t"]
    minutes = d["per_minute"]
    p50s = [m["p50_ms"] for m in minutes if m["p50_ms"] is not None]
    lines = [
        "## Soak",
        "",
        f"`make soak` (`python -m benchmarks.reliability soak --minutes "
        f"{d['minutes']:.0f}`; {d['written']}): {d['rate']:.0f} turns/s (70 % of "
        f"capacity) for {d['minutes']:.0f} minutes. {d['sent']} turns, {d['ok']} "
        f"answered, {d['rejected_429']} refused with 429, {d['errors']} errors; p50 "
        f"{d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms.",
        "",
        "Resident memory sampled every 10 s:",
        "",
        "| process | at start MB | after 2 min MB | at end MB | growth over the last "
        f"{(last['t'] - settled['t']) / 60:.0f} min MB |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        lines.append(
            f"| {n} | {first[n]:.0f} | {settled[n]:.0f} | {last[n]:.0f} | "
            f"{last[n] - settled[n]:+.1f} |"
        )
    if p50s:
        lines += [
            "",
            "Latency drift, p50 per minute (ms): "
            + ", ".join(f"{p:.1f}" for p in p50s)
            + f" (first {p50s[0]:.1f}, last {p50s[-1]:.1f}).",
        ]
    return lines + [""]


def actions_section(d: dict) -> list[str]:
    lines = [
        "## Webhook actions",
        "",
        f"`python -m benchmarks.actions --seconds {d['seconds']:g}`: a gateway in front of the "
        "stand-in classifier (the action path, not the model) with a copy of the CLINC150 pack "
        "whose balance intent calls a benchmark back-end (benchmarks/slow_backend.py) taking a "
        "fixed delay per call; action timeout 2 s, 1 retry, breaker after 5 failures, reset "
        "10 s. Closed-loop clients, one session each, on the same 2 cores as the gateway, the "
        "back-end and the stand-in; every reply classified by the chat response's `action`.",
        "",
        "| back-end delay | clients | turns/s | p50 ms | p99 ms | outcomes |",
        "|---|---|---|---|---|---|",
    ]
    for key, row in d.items():
        if not key.startswith("delay_"):
            continue
        delay, clients = key.removeprefix("delay_").split("_clients_")
        lines.append(
            f"| {delay} | {clients} | {row['turns_per_s']} | {row['p50_ms']} | {row['p99_ms']} | "
            f"{_outcomes(row['outcomes'])} |"
        )
    r = d["restart"]
    lines += [
        "",
        "A back-end slower than the timeout costs a few timed-out turns, then the breaker "
        "answers at once (`failed:breaker_open`, the pack's \"can't get that right now\" "
        "text): no turn waits for a dead back-end, none is a 5xx.",
        "",
        f"Restart: 8 clients, the back-end down for the first {r['backend_started_at_s']:g} s "
        f"({r['failed_while_down']} turns answered with the failure text), then started on "
        f"the same port; the first successful call came {r['first_ok_after_start_s']:g} s "
        "after it started: the breaker's reset time (`GATEWAY_BREAKER_RESET_S`, 10 s from "
        "the first failures) bounds recovery, since action back-ends have no readiness "
        f"probe. All outcomes: {_outcomes(r['outcomes'])}.",
        "",
    ]
    return lines


def swap_section(d: dict) -> list[str]:
    before = d["before"]
    lines = [
        "## Swapping model versions under load",
        "",
        f"`python -m benchmarks.reliability swap` ({d['written']}): {d['rate']:.0f} chat "
        f"turns/s for {d['duration_s']:.0f} s through the gateway (the load above); the "
        "classifier, then the generator, is told to serve a new version "
        "(`POST /admin/model`, a copy of its artifact under another version) while the load "
        "runs. Each loads and warms up beside the old version, which serves until the switch "
        "and then finishes what it had queued (docs/retraining.md). Client timeout 5 s.",
        "",
        f"{d['sent']} turns: {d['ok']} answered, {d['rejected_429']} refused with 429, "
        f"**{d['errors']} failed** (5xx or timeouts). Outcomes: {_outcomes(d['outcomes'])}.",
        "",
        "| window | turns | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
        f"| before any swap | {before['n']} | {before['p50_ms']} | {before['p99_ms']} | "
        f"{before['max_ms']} |",
    ]
    for s in d["swaps"]:
        w = s["during"]
        lines.append(
            f"| {s['service']} swap: request to switch + 2 s "
            f"({s['switched_at_s'] - s['requested_at_s']:.1f} s; load "
            f"{s.get('load_seconds', 0):.1f} s, warm-up {s.get('warmup_seconds', 0):.1f} s) | "
            f"{w['n']} | {w['p50_ms']} | {w['p99_ms']} | {w['max_ms']} |"
        )
    served = ", ".join(f"{k} {v}" for k, v in d["served_after"].items())
    lines += ["", f"Serving afterwards: {served}.", ""]
    return lines


def write_report(results: Path, out: Path) -> None:
    lines = [
        "# Reliability",
        "",
        "What the stack does under load, faults and hostile input. Every figure below "
        "comes from the command named with it; the JSON behind each section is in "
        "`docs/reliability/`. The CI tests that check the same behaviour on small "
        "models are listed at the end.",
        "",
    ]
    for name, section in (
        ("load", load_section),
        ("overload", overload_section),
        ("faults", faults_section),
        ("soak", soak_section),
        ("swap", swap_section),
        ("actions", actions_section),
    ):
        d = _load(results, name)
        extra = (_load(results, "load-torch-generator"),) if name == "load" else ()
        lines += section(d, *extra) if d else [f"## {name.title()}", "", "(not run yet)", ""]
    notes = results.parent / "reliability-notes.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    out.write_text("\n".join(lines))
