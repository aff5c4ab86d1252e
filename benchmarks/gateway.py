"""Gateway overhead: what a chat turn costs on top of the upstream call it makes.

The classifier service runs the real artifact; the gateway runs in front of it. The texts
are CLINC150 test utterances of intents the gateway answers itself (template replies:
account, card, HR, device intents), so one turn = one classifier call + the gateway's own
work (session store, dialogue policy, JSON). wrk drives both: single-text /v1/classify
straight to the classifier, and /v1/chat through the gateway (a new session per request).
"""

from __future__ import annotations

import contextlib
import random
import tempfile
from pathlib import Path

from benchmarks.http_load import checkout, cpu_seconds, free_port, rss_mb, server, wrk

TEMPLATE_CORES = {
    "account_info",
    "card_services",
    "work_and_hr",
    "device_and_assistant",
    "shopping_and_orders",
}


def template_texts(n: int = 2000) -> list[str]:
    from parlance.pack import load_pack
    from training.data import load_clinc

    label_map = load_pack().label_map
    test = load_clinc(None, "full").test
    texts = [
        t
        for t, i in zip(test.texts, test.intents, strict=True)
        if i != "oos" and label_map.core_of(i) in TEMPLATE_CORES
    ]
    random.Random(0).shuffle(texts)
    return texts[:n]


def run(
    classifier_artifact: str | None,
    seconds: int = 10,
    before: str | None = None,
    env: dict[str, str] | None = None,
) -> dict:
    """`before`: a git revision whose gateway is measured too, in the same run, behind the
    same classifier, the two loads interleaved. `env`: settings for both services (e.g.
    CLASSIFIER_ORT_SPINNING). At one client it also records the CPU each process used per
    request: on a small machine the two compete for the same cores. `classifier_artifact`
    None: the keyword stand-in classifier of the tests (tests/standin_classifier.py), which
    answers at once, so that the gateways' CPU per turn is theirs alone (its turns take
    other dialogue paths than the real classifier's: compare gateways within one run)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(template_texts()))
        texts = Path(f.name)
    out: dict = {}
    clf_env = {"CLASSIFIER_LOG_LEVEL": "WARNING", **(env or {})}
    classifier = (
        ["services.classifier", "--artifact", classifier_artifact]
        if classifier_artifact
        else ["tests.standin_classifier"]
    )
    out["classifier"] = classifier_artifact or "stand-in"
    with server(classifier, clf_env) as (clf, clf_pid):
        gw_env = {
            "CLASSIFIER_URL": clf,
            "GENERATOR_URL": f"http://127.0.0.1:{free_port()}",
            "GATEWAY_RATE_LIMIT": "",
            "GATEWAY_LOG_LEVEL": "WARNING",
            # closed-loop wrk at 64 connections measures throughput, not admission
            # control (docs/reliability.md covers overload)
            "GATEWAY_MAX_IN_FLIGHT": "1024",
            **(env or {}),
        }
        with contextlib.ExitStack() as stack:
            gw, gw_pid = stack.enter_context(server(["services.gateway"], gw_env))
            gateways = {"gateway": gw}
            pids = {"classifier": clf_pid, "gateway": gw_pid}
            if before:
                tree = stack.enter_context(checkout(before))
                old, old_pid = stack.enter_context(server(["services.gateway"], gw_env, cwd=tree))
                gateways["before"] = old
                pids["before"] = old_pid
                out["before_revision"] = before
            wrk(clf, 2, 2, texts)
            for url in gateways.values():
                wrk(url, 2, 2, texts, "/v1/chat", "chat")  # warm-up
            for clients in (1, 64):
                load = [("classifier", clf, "/v1/classify", "classify")]
                load += [(name, url, "/v1/chat", "chat") for name, url in gateways.items()]
                for name, url, path, body in load:
                    used = {k: cpu_seconds(pid) for k, pid in pids.items()}
                    r = out[f"{name}_{clients}"] = wrk(url, clients, seconds, texts, path, body)
                    if clients == 1 and name in pids:
                        served = r["requests"]
                        r["cpu_ms_per_request"] = {
                            k: 1000 * (cpu_seconds(pid) - used[k]) / served
                            for k, pid in pids.items()
                        }
            out["gateway_memory"] = rss_mb(gw_pid)
    texts.unlink()
    return out


def markdown(r: dict) -> list[str]:
    before = r.get("before_revision")
    rows = [
        (name, c, r[f"{key}_{c}"])
        for c in (1, 64)
        for name, key in (
            ("classifier direct, /v1/classify", "classifier"),
            ("gateway, /v1/chat", "gateway"),
            (f"gateway at {before}, /v1/chat", "before"),
        )
        if f"{key}_{c}" in r
    ]
    lines = [
        "",
        "## Gateway",
        "",
        "One chat turn on a template-answered intent = one classifier call + the "
        "gateway's own work (in-memory session store, dialogue policy). wrk, one client "
        "thread, real CLINC150 test utterances of those intents, a new session per "
        "request.",
    ]
    if r.get("classifier") == "stand-in":
        lines[-1] += (
            " Behind the tests' keyword stand-in classifier (`--standin`), not a model: its "
            "answers send most turns down other dialogue paths than the real classifier's, so "
            "compare the gateways within this table only."
        )
    lines += [
        "",
        "| path | connections | requests/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c, x in rows:
        lines.append(
            f"| {name} | {c} | {x['throughput']:.0f} | {x['p50_ms']:.2f} | "
            f"{x['p95_ms']:.2f} | {x['p99_ms']:.2f} | {x['errors']} |"
        )
    added = r["gateway_1"]["p50_ms"] - r["classifier_1"]["p50_ms"]
    turn_cpu = r["gateway_1"]["cpu_ms_per_request"]
    lines += [
        "",
        "| check | measured | target |",
        "|---|---|---|",
        f"| p50 added by the gateway at 1 client (ms) | {added:.2f} | <= 1.0 |",
    ]
    if before:
        was = r["before_1"]["p50_ms"] - r["classifier_1"]["p50_ms"]
        lines.append(
            f"| p50 added at 1 client by the gateway at {before} (same run) (ms) | "
            f"{was:.2f} | reported |"
        )
        if "before" in r["before_1"].get("cpu_ms_per_request", {}):
            lines.append(
                f"| CPU per chat turn at 1 client, the gateway at {before} (ms) | "
                f"{r['before_1']['cpu_ms_per_request']['before']:.2f} | reported |"
            )
    lines += [
        f"| chat turns/s at 64 clients | {r['gateway_64']['throughput']:.0f} | reported |",
        f"| CPU per chat turn at 1 client, gateway / classifier (ms) | "
        f"{turn_cpu['gateway']:.2f} / {turn_cpu['classifier']:.2f} | reported |",
        f"| classifier CPU per direct request at 1 client (ms) | "
        f"{r['classifier_1']['cpu_ms_per_request']['classifier']:.2f} | reported |",
        f"| gateway peak resident memory (MB) | "
        f"{r['gateway_memory']['peak_rss_mb']:.0f} | reported |",
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    """The gateway's part of `make bench` on its own: `python -m benchmarks.gateway
    --artifact artifacts/classifier` (the classifier artifact it runs behind)."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    p.add_argument("--artifact", default=None, help="classifier artifact directory")
    p.add_argument(
        "--standin",
        action="store_true",
        help="behind the tests' keyword stand-in classifier instead (the gateways' own CPU)",
    )
    p.add_argument("--seconds", type=int, default=10, help="wrk duration per load level")
    p.add_argument("--json", default=None, help="also write the raw figures here")
    p.add_argument(
        "--before", default=None, metavar="REV", help="also measure the gateway of this revision"
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for both services, e.g. CLASSIFIER_ORT_SPINNING=false (repeatable)",
    )
    args = p.parse_args(argv)
    if bool(args.artifact) == args.standin:
        p.error("give --artifact or --standin")
    env = dict(item.split("=", 1) for item in args.env)
    result = run(None if args.standin else args.artifact, args.seconds, args.before, env)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(markdown(result)))


if __name__ == "__main__":
    main()
