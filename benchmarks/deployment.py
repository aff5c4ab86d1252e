"""Deployment figures: Lambda cold starts (measured locally) and how fast `make demo` is up
when its artifacts exist. Written to docs/benchmarks-deployment.md.

    python -m benchmarks.deployment --classifier-artifact artifacts/classifier \\
        --generator-artifact artifacts/generator --output docs/benchmarks-deployment.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.http_load import REPO, free_port, server
from benchmarks.run import machine

EVENTS = REPO / "tests" / "data" / "lambda"


def invoke_fresh(handler: str, events: list[str], env: dict[str, str], repeat: int = 1) -> dict:
    """`python -m services.common.lambda_adapter` in a fresh process (a real cold start)
    with events from tests/data/lambda/: its JSON result, or the end of its output."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "services.common.lambda_adapter",
                handler,
                *[str(EVENTS / e) for e in events],
                "--repeat",
                str(repeat),
                "--output",
                str(out),
            ],
            cwd=REPO,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if r.returncode != 0:
            raise RuntimeError(f"{handler} failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
        return json.loads(out.read_text())


def cold_start(handler: str, event: str, env: dict[str, str], warm: int = 50) -> dict:
    """One fresh process: init (imports + app + model load/warm-up), the first invocation,
    then `warm` more of the same event."""
    t0 = time.perf_counter()
    r = invoke_fresh(handler, [event], env, repeat=warm + 1)
    wall = time.perf_counter() - t0
    calls = r["invocations"]
    assert all(c["response"]["statusCode"] == 200 for c in calls), calls[0]["response"]
    warm_ms = sorted(c["ms"] for c in calls[1:])
    return {
        "process_s": wall,
        "init_s": r["init_s"],
        "first_ms": calls[0]["ms"],
        "warm_p50_ms": statistics.median(warm_ms),
        "warm_p95_ms": warm_ms[int(0.95 * (len(warm_ms) - 1))],
        "max_rss_mb": r["max_rss_mb"],
        "torch_imported": r["torch_imported"],
    }


def served_backend(env: dict[str, str]) -> str:
    """Which ONNX model the classifier handler chose (int8 only when accurate enough)."""
    r = invoke_fresh("services.classifier.lambda_handler", ["model_info.json"], env)
    return json.loads(r["invocations"][0]["response"]["body"])["backend"]


def bench_lambda(classifier: str, runs: int) -> list[dict]:
    rows = []
    for label, env in [
        ("classifier, int8 if accurate (Lambda default)", {"CLASSIFIER_ARTIFACT": classifier}),
        ("classifier, fp32", {"CLASSIFIER_ARTIFACT": classifier, "CLASSIFIER_BACKEND": "onnx"}),
    ]:
        env = {**env, "CLASSIFIER_LOG_LEVEL": "WARNING"}
        samples = [
            cold_start("services.classifier.lambda_handler", "classify.json", env)
            for _ in range(runs)
        ]
        rows.append({"handler": f"{label}: served {served_backend(env)}", **median_row(samples)})
    with server(
        ["services.classifier", "--artifact", classifier], {"CLASSIFIER_LOG_LEVEL": "WARNING"}
    ) as (url, _):
        env = {
            "CLASSIFIER_URL": url,
            "GENERATOR_URL": f"http://127.0.0.1:{free_port()}",
            "GATEWAY_API_KEYS": "lambda-test-key",
            "GATEWAY_RATE_LIMIT": "",
            "GATEWAY_LOG_LEVEL": "WARNING",
        }
        samples = [
            cold_start("services.gateway.lambda_handler", "chat.json", env) for _ in range(runs)
        ]
    rows.append({"handler": "gateway (chat turn, real classifier)", **median_row(samples)})
    return rows


def median_row(samples: list[dict]) -> dict:
    row = {k: statistics.median(s[k] for s in samples) for k in samples[0] if k != "torch_imported"}
    row["torch_imported"] = any(s["torch_imported"] for s in samples)
    row["runs"] = len(samples)
    return row


def bench_demo_restart(classifier: str, generator: str, runs: int) -> list[float]:
    """Seconds from `python -m services.local_stack` (what `make demo` runs once artifacts
    exist) to the chat page URL printed, i.e. all three services ready."""
    times = []
    for _ in range(runs):
        port = free_port()
        with tempfile.TemporaryDirectory() as logs:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.local_stack",
                    "--classifier-artifact",
                    classifier,
                    "--generator-artifact",
                    generator,
                    "--port",
                    str(port),
                    "--classifier-port",
                    str(free_port()),
                    "--generator-port",
                    str(free_port()),
                    "--log-dir",
                    logs,
                ],
                cwd=REPO,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                for line in proc.stdout:
                    if "chat page" in line:
                        times.append(time.perf_counter() - t0)
                        break
                else:
                    raise RuntimeError("the stack did not come up")
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    return times


def markdown(lambda_rows: list[dict], demo: list[float], classifier: str, generator: str) -> str:
    lines = [
        "# Deployment benchmarks",
        "",
        f"Written by `make bench-deploy` (`python -m benchmarks.deployment`) on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}. Machine: {machine()}.",
        f"Artifacts: `{classifier}`, `{generator}`.",
        "",
        "## Lambda cold start, measured locally",
        "",
        "Each run is a fresh Python process doing what Lambda does with the container image: "
        "import the handler module (init: imports, app, model load and warm-up), invoke it with "
        "an API Gateway HTTP API (payload 2.0) event, then 50 warm invocations of the same "
        "event (`python -m services.common.lambda_adapter`). Medians over the runs. Not "
        "included: the image pull and Lambda's own sandbox start, which only AWS can measure; "
        "Lambda gives a function CPU in proportion to its memory setting (a full vCPU at "
        "1,769 MB), so init there is slower at small memory sizes.",
        "",
        "| handler | runs | init s | first request ms | warm p50 ms | warm p95 ms | "
        "peak RSS MB | torch imported |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in lambda_rows:
        lines.append(
            f"| {r['handler']} | {r['runs']} | {r['init_s']:.2f} | "
            f"{r['first_ms']:.1f} | {r['warm_p50_ms']:.2f} | {r['warm_p95_ms']:.2f} | "
            f"{r['max_rss_mb']:.0f} | {'yes' if r['torch_imported'] else 'no'} |"
        )
    lines += [
        "",
        "## `make demo` with its artifacts present",
        "",
        "Seconds from starting `python -m services.local_stack` (what `make demo` runs once the "
        "artifacts exist) to the chat page URL printed, i.e. classifier, generator and "
        "gateway all ready: "
        + ", ".join(f"{t:.1f}" for t in demo)
        + f" (median {statistics.median(demo):.1f} s; target < 60 s). `make demo` adds the "
        "make/venv check and the report lines, about a second.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classifier-artifact", required=True)
    p.add_argument("--generator-artifact", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--output", default="docs/benchmarks-deployment.md")
    args = p.parse_args(argv)
    rows = bench_lambda(args.classifier_artifact, args.runs)
    demo = bench_demo_restart(args.classifier_artifact, args.generator_artifact, args.runs)
    Path(args.output).write_text(
        markdown(rows, demo, args.classifier_artifact, args.generator_artifact)
    )
    print(Path(args.output).read_text())


if __name__ == "__main__":
    main()
