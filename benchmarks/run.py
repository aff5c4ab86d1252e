"""`make bench`: run the benchmarks and write docs/benchmarks.md.

python -m benchmarks.run --artifact artifacts/classifier --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.backend import SAMPLE, latency_batch1, throughput
from benchmarks.http_load import rss_mb, server, wrk
from services.classifier.artifact import ClassifierArtifact
from services.classifier.backends import load_backend

CONNECTIONS = (1, 16, 64)


def sample_texts(n: int = 2000) -> list[str]:
    try:
        from training.data import load_clinc

        texts = load_clinc(None, "full").test.texts
    except Exception:  # noqa: BLE001 - the benchmark still runs on the built-in samples
        texts = SAMPLE * 50
    rng = random.Random(0)
    texts = list(texts)
    rng.shuffle(texts)
    return texts[:n]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def bench_backends(artifact: str, batch_sizes: list[int]) -> list[dict]:
    rows = []
    # torch-bf16 too on a CPU without bfloat16 instructions: emulated, and the table shows
    # what that costs
    for kind in ("torch", "torch-bf16", "onnx", "onnx-int8"):
        # Each backend in a fresh subprocess so its resident memory is its own.
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.run",
                "--artifact",
                artifact,
                "--one-backend",
                kind,
                "--batch-sizes",
                ",".join(map(str, batch_sizes)),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def one_backend(artifact: str, kind: str, batch_sizes: list[int]) -> dict:
    art = ClassifierArtifact.load(artifact)
    be = load_backend(art, kind)
    texts = sample_texts()
    row = {"backend": kind, **latency_batch1(be, texts)}
    row["throughput"] = {bs: throughput(be, texts, bs) for bs in batch_sizes}
    row["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def bench_http(artifact: str, texts: list[str], seconds: int, backend: str) -> dict:
    """The classifier service and the naive baseline under 1, 16 and 64 connections."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(t.replace("\n", " ") for t in texts))
        texts_file = Path(f.name)
    results: dict = {"service": [], "naive": []}
    env = {"CLASSIFIER_BACKEND": backend, "CLASSIFIER_LOG_LEVEL": "WARNING"}
    with server(["services.classifier", "--artifact", artifact], env) as (url, pid):
        model = httpx.get(url + "/v1/model", timeout=10).json()
        results["served"] = model["backend"]
        results["backend_timing"] = model.get("backend_timing")
        wrk(url, 4, 2, texts_file)  # warm-up
        for c in CONNECTIONS:
            results["service"].append(wrk(url, c, seconds, texts_file))
        results["service_memory"] = rss_mb(pid)
    with server(["benchmarks.naive_server", "--artifact", artifact]) as (url, pid):
        wrk(url, 4, 2, texts_file)
        for c in CONNECTIONS:
            results["naive"].append(wrk(url, c, seconds, texts_file))
        results["naive_memory"] = rss_mb(pid)
    texts_file.unlink()
    return results


def write_markdown(
    rows: list[dict],
    http: dict | None,
    artifact: str,
    path: Path,
    generator: tuple[str, dict] | None = None,
    gateway: dict | None = None,
) -> None:
    m = ClassifierArtifact.load(artifact).manifest
    sizes = sorted({int(b) for r in rows for b in r["throughput"]})
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m benchmarks.run`) on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}. Machine: {machine()}.",
        f"Artifact: `{artifact}` ({m['base_model']}, {m['preset']} preset, "
        f"version {m['version']}). One run; on this shared 2-core machine throughput moves "
        "by up to ~15 % between runs.",
        "",
        "## Classifier backends (raw model, no HTTP)",
        "",
        "Real CLINC150 test queries, tokenisation included, default thread settings, "
        "each backend in its own process.",
        "",
        "| backend | batch-1 p50 ms | batch-1 p95 ms | "
        + " | ".join(f"texts/s @ {b}" for b in sizes)
        + " | peak RSS MB |",
        "|---|---|---|" + "---|" * len(sizes) + "---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
            + " | ".join(f"{r['throughput'][str(b)]:.0f}" for b in sizes)
            + f" | {r['rss_mb']:.0f} |"
        )
    raw = {r["backend"]: r for r in rows}
    if http:
        # what the service served (auto: the figures rule, then the start-up timing)
        backend = {"onnx-fp32": "onnx"}.get(http["served"], http["served"])
        # an int8 alternate (onnx-int8:<recipe>) has no row of its own: the chosen one's
        served = raw.get(backend) or raw[backend.split(":")[0]]
        best_raw = max(served["throughput"].values())
        torch_b32 = raw.get("torch", {}).get("throughput", {}).get("32")
        lines += [
            "",
            f"## Classifier service over HTTP (backend {backend})",
            "",
            "wrk, one client thread, single-text `POST /v1/classify` requests cycling through "
            "real queries, on 127.0.0.1. `client CPU` is the share of the machine's CPU the "
            "load generator itself used.",
            "",
            "| server | connections | requests/s | p50 ms | p95 ms | p99 ms | errors | "
            "client CPU |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in ("service", "naive"):
            for r in http[name]:
                lines.append(
                    f"| {name} | {r['connections']} | {r['throughput']:.0f} | "
                    f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
                    f"{r['errors']} | {r['client_cpu_share']:.0%} |"
                )
        svc = {r["connections"]: r for r in http["service"]}
        naive = {r["connections"]: r for r in http["naive"]}
        mem = http["service_memory"]
        checks = [
            (
                "throughput at 64 clients / raw backend best",
                svc[64]["throughput"] / best_raw,
                ">= 0.85",
            ),
            (
                "throughput at 64 clients / naive baseline at 64",
                svc[64]["throughput"] / naive[64]["throughput"],
                ">= 3",
            ),
            ("p50 at 1 client - raw batch-1 p50 (ms)", svc[1]["p50_ms"] - served["p50_ms"], "<= 1"),
            ("service peak resident memory (MB)", mem["peak_rss_mb"], "<= 500"),
        ]
        if torch_b32:
            checks.insert(
                0,
                (
                    "throughput at 64 clients / raw torch at batch 32",
                    svc[64]["throughput"] / torch_b32,
                    ">= 2.0",
                ),
            )
        lines += ["", "| check | measured | target |", "|---|---|---|"]
        lines += [f"| {name} | {value:.2f} | {target} |" for name, value, target in checks]
        lines += ["", f"Naive baseline peak memory: {http['naive_memory']['peak_rss_mb']:.0f} MB."]
        if http.get("backend_timing"):
            timing = ", ".join(f"{k} {v:.0f}" for k, v in http["backend_timing"].items())
            lines += [
                "",
                "The service's `auto` timed the backends that keep the figures at full batches, "
                "each run as served (an ONNX model as many batches at once as it has workers), at "
                f"start-up (texts/s: {timing}) and served {http['served']}.",
            ]
    lines += [
        "",
        "## Training",
        "",
        f"The artifact above trained in {m['training']['seconds']:.0f} s "
        f"({m['training'].get('total_seconds', 0):.0f} s including calibration, ONNX "
        f"export and evaluation) on {m['training']['device']} with "
        f"{m['training']['torch_threads']} threads; reproduce with `make train-classifier`.",
        "",
    ]
    if generator:
        from benchmarks import generator as gen_bench

        gen_artifact, gen_result = generator
        gen_manifest = json.loads((Path(gen_artifact) / "manifest.json").read_text())
        lines += gen_bench.markdown(gen_result, gen_artifact, gen_manifest)
        lines += [
            "",
            f"The generator trained in {gen_manifest['training']['seconds']:.0f} s; "
            "reproduce with `make train-generator`.",
            "",
        ]
    if gateway:
        from benchmarks import gateway as gw_bench

        lines += gw_bench.markdown(gateway)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", required=True)
    p.add_argument("--output", default="docs/benchmarks.md")
    p.add_argument("--batch-sizes", default="1,8,32,64")
    p.add_argument(
        "--backend", default="auto", help="backend the service runs with (default: its default)"
    )
    p.add_argument(
        "--gateway-before", default=None, metavar="REV", help="also measure this revision's gateway"
    )
    p.add_argument(
        "--generator-before",
        default=None,
        metavar="REV",
        help="also measure this revision's generator service on the same artifact",
    )
    p.add_argument("--seconds", type=int, default=10, help="wrk duration per load level")
    p.add_argument("--skip-http", action="store_true")
    p.add_argument(
        "--generator-artifact", default=None, help="also benchmark this generator artifact"
    )
    p.add_argument("--one-backend", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.one_backend:
        print(json.dumps(one_backend(args.artifact, args.one_backend, sizes)))
        return
    rows = bench_backends(args.artifact, sizes)
    http = (
        None
        if args.skip_http
        else bench_http(args.artifact, sample_texts(), args.seconds, args.backend)
    )
    generator = None
    if args.generator_artifact:
        from benchmarks import generator as gen_bench

        generator = (
            args.generator_artifact,
            gen_bench.run(args.generator_artifact, before=args.generator_before),
        )
    gateway = None
    if not args.skip_http:
        from benchmarks import gateway as gw_bench

        gateway = gw_bench.run(args.artifact, args.seconds, args.gateway_before)
    write_markdown(rows, http, args.artifact, Path(args.output), generator, gateway)
    print(Path(args.output).read_text())


if __name__ == "__main__":
    main()
