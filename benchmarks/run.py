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
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.backend import SAMPLE, latency_batch1, throughput
from services.classifier.artifact import ClassifierArtifact
from services.classifier.backends import load_backend


def test_texts(n: int = 2000) -> list[str]:
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
    for kind in ("torch", "onnx", "onnx-int8"):
        # Each backend in a fresh subprocess so its resident memory is its own.
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.run", "--artifact", artifact, "--one-backend", kind,
             "--batch-sizes", ",".join(map(str, batch_sizes))],
            capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def one_backend(artifact: str, kind: str, batch_sizes: list[int]) -> dict:
    art = ClassifierArtifact.load(artifact)
    be = load_backend(art, kind)
    texts = test_texts()
    row = {"backend": kind, **latency_batch1(be, texts)}
    row["throughput"] = {bs: throughput(be, texts, bs) for bs in batch_sizes}
    row["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def write_markdown(rows: list[dict], artifact: str, path: Path) -> None:
    m = ClassifierArtifact.load(artifact).manifest
    sizes = sorted({int(b) for r in rows for b in r["throughput"]})
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m benchmarks.run`) on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}. Machine: {machine()}.",
        f"Artifact: `{artifact}` ({m['base_model']}, {m['preset']} preset, "
        f"version {m['version']}). One run; numbers move by a few per cent between runs.",
        "",
        "## Classifier backends (raw model, no HTTP)",
        "",
        "Real CLINC150 test queries, tokenisation included, default thread settings.",
        "",
        "| backend | batch-1 p50 ms | batch-1 p95 ms | "
        + " | ".join(f"texts/s @ {b}" for b in sizes) + " | peak RSS MB |",
        "|---|---|---|" + "---|" * len(sizes) + "---|",
    ]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
                     + " | ".join(f"{r['throughput'][str(b)]:.0f}" for b in sizes)
                     + f" | {r['rss_mb']:.0f} |")
    best = {r["backend"]: max(r["throughput"].values()) for r in rows}
    lines += ["", "Best throughput: " + ", ".join(f"{k} {v:.0f}/s" for k, v in best.items())
              + ".", "",
              "## Training", "",
              f"The artifact above trained in {m['training']['seconds']:.0f} s "
              f"({m['training'].get('total_seconds', 0):.0f} s including calibration, ONNX "
              f"export and evaluation) on {m['training']['device']} with "
              f"{m['training']['torch_threads']} threads; reproduce with `make train-classifier`.",
              ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", required=True)
    p.add_argument("--output", default="docs/benchmarks.md")
    p.add_argument("--batch-sizes", default="1,8,32,64")
    p.add_argument("--one-backend", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.one_backend:
        print(json.dumps(one_backend(args.artifact, args.one_backend, sizes)))
        return
    rows = bench_backends(args.artifact, sizes)
    write_markdown(rows, args.artifact, Path(args.output))
    print(Path(args.output).read_text())


if __name__ == "__main__":
    main()
