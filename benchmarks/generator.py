"""Generator benchmarks, each backend side by side in one run (torch `generate` and the ONNX
decoder): the raw model (batch-1 latency, tokens/s, batched throughput), the service over
real HTTP (1 client vs 16 concurrent clients) with its memory, and the quality of the
model's own replies on the test requests.

    python -m benchmarks.generator --artifact artifacts/generator [--output F.json]

The requests are the generator's real test inputs (CLINC150 test utterances of the generated
intents, with the slots and facts the builder gives them). The load generator is an async
httpx client: a generation takes tens of milliseconds, so the client's own cost is small
next to it (its CPU share is reported).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from benchmarks.http_load import checkout, rss_mb, server
from services.generator.model import GenerationRequest

CONCURRENCY = 16


def test_requests(n: int = 400) -> list[dict]:
    from training.data import load_clinc
    from training.response_data import build_examples

    examples = build_examples(load_clinc(None, "full"), splits=("test",))["test"]
    rng = random.Random(0)
    rng.shuffle(examples)
    return [
        {"intent": e.core_intent, "text": e.text, "slots": e.slots, "facts": e.facts}
        for e in examples[:n]
    ]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_model(artifact: str, bodies: list[dict], backend: str, n: int = 200) -> dict:
    from services.generator.model import GeneratorModel

    gen = GeneratorModel(artifact, backend=backend)
    reqs = [GenerationRequest(**b) for b in bodies]
    gen.warmup()
    lat, tokens = [], []
    for r in reqs[:n]:
        t = time.perf_counter()
        out = gen.respond([r])[0]
        lat.append(time.perf_counter() - t)
        tokens.append(out.generated_tokens)
    batched = {}
    for bs in (8, 16):
        t = time.perf_counter()
        done = 0
        for i in range(0, min(len(reqs), 8 * bs), bs):
            done += len(gen.respond(reqs[i : i + bs]))
        batched[bs] = done / (time.perf_counter() - t)
    # The service's workers (ONNX: one per core): batches of 8 side by side, a thread each.
    side_by_side = None
    if gen.workers > 1:
        share = [reqs[k :: gen.workers][: 8 * 8] for k in range(gen.workers)]

        def decode(part: list[GenerationRequest]) -> int:
            return sum(len(gen.respond(part[i : i + 8])) for i in range(0, len(part), 8))

        t = time.perf_counter()
        with ThreadPoolExecutor(gen.workers) as pool:
            done = sum(pool.map(decode, share))
        side_by_side = done / (time.perf_counter() - t)
    long = [t for t, k in zip(lat, tokens, strict=True) if 16 <= k <= 24]
    return {
        "p50_ms": 1000 * statistics.median(lat),
        "p95_ms": 1000 * pct(lat, 0.95),
        "n": len(lat),
        "long_n": len(long),
        "long_p50_ms": 1000 * statistics.median(long) if long else float("nan"),
        "mean_tokens": statistics.mean(tokens),
        "tokens_per_s_batch1": sum(tokens) / sum(lat),
        "replies_per_s": batched,
        "workers": gen.workers,
        "replies_per_s_side_by_side": side_by_side,
    }


def quality(artifact: str, backend: str) -> dict:
    """The model's own replies (before any fallback) on all the generator's test requests."""
    from training.generator import GenerationArguments, evaluate_artifact
    from training.generator_eval import artifact_examples

    _, examples = artifact_examples(artifact)
    report = evaluate_artifact(
        Path(artifact), examples["test"], GenerationArguments(latency_samples=5), backend=backend
    )
    return {k: report[k] for k in ("model", "served")}


async def _load(url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    lat: list[float] = []
    codes: dict = {}
    tokens = 0
    stop = time.perf_counter() + seconds
    cpu0 = time.process_time()
    started = time.perf_counter()

    async def client(k: int, c: httpx.AsyncClient) -> None:
        nonlocal tokens
        i = k
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                r = await c.post("/v1/generate", json=bodies[i % len(bodies)])
            except httpx.HTTPError as e:  # counted, not fatal: the run reports errors
                codes[type(e).__name__] = codes.get(type(e).__name__, 0) + 1
                i += clients
                continue
            lat.append(time.perf_counter() - t)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if r.status_code == 200:
                tokens += r.json()["generated_tokens"]
            i += clients

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        await asyncio.gather(*[client(k, c) for k in range(clients)])
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(lat),
        "throughput": len(lat) / wall,
        "p50_ms": 1000 * statistics.median(lat),
        "p95_ms": 1000 * pct(lat, 0.95),
        "p99_ms": 1000 * pct(lat, 0.99),
        "tokens_per_s": tokens / wall,
        "errors": sum(v for k, v in codes.items() if k != 200),
        "status_codes": {str(k): v for k, v in sorted(codes.items())},
        "client_cpu_share": (time.process_time() - cpu0) / wall / 2,
    }


def bench_http(
    artifact: str,
    bodies: list[dict],
    seconds: int,
    backend: str,
    continuous: bool = False,
    cwd: Path | None = None,
) -> dict:
    """`cwd`: another checkout whose service is measured (an older revision, same run)."""
    env = {
        "GENERATOR_LOG_LEVEL": "WARNING",
        "GENERATOR_BACKEND": backend,
        "GENERATOR_CONTINUOUS_BATCHING": str(continuous).lower(),
    }
    artifact = str(Path(artifact).resolve())  # the same artifact from another checkout too
    with server(["services.generator", "--artifact", artifact], env, cwd=cwd) as (url, pid):
        asyncio.run(_load(url, bodies, 4, 3))  # warm-up
        rows = [asyncio.run(_load(url, bodies, c, seconds)) for c in (1, CONCURRENCY)]
        return {"rows": rows, "memory": rss_mb(pid)}


BACKENDS = ("torch", "onnx", "onnx-int8")


def run(artifact: str, seconds: int = 15, before: str | None = None) -> dict:
    """Each backend's figures; the model benchmarks of the two interleaved with their
    services' loads would share nothing, so they run one backend after the other.
    `before`: a git revision whose generator service is measured too, on the same artifact
    in the same run (the service as it was, with its own defaults)."""
    from services.generator.model import GeneratorModel

    bodies = test_requests()
    default = GeneratorModel(artifact).backend  # what GENERATOR_BACKEND=auto serves
    old = {}
    if before:
        with checkout(before) as tree:
            old = {
                "before": {
                    "revision": before,
                    "http": bench_http(artifact, bodies, seconds, "auto", cwd=tree),
                }
            }
    return {
        **old,
        "default": default,
        # the same backend with continuous batching (off by default): what it gives
        "continuous": bench_http(artifact, bodies, seconds, default, continuous=True),
        **{
            backend: {
                "model": bench_model(artifact, bodies, backend),
                "http": bench_http(artifact, bodies, seconds, backend),
                "quality": quality(artifact, backend),
            }
            for backend in BACKENDS
        },
    }


def markdown(result: dict, artifact: str, manifest: dict) -> list[str]:
    ev = manifest.get("evaluation", {}).get("latency", {})
    models = {b: result[b]["model"] for b in BACKENDS}
    backends = manifest.get("backends", {})
    by_c = {b: {r["clients"]: r for r in result[b]["http"]["rows"]} for b in BACKENDS}
    agreement = manifest.get("backends", {}).get("onnx", {}).get("agreement", {})

    def row(label: str, fmt) -> str:
        return f"| {label} | " + " | ".join(fmt(models[b]) for b in BACKENDS) + " |"

    lines = [
        "",
        "## Generator",
        "",
        f"Artifact: `{artifact}` ({manifest['base_model']}, {manifest['architecture']}, "
        f"{manifest['preset']} preset, version {manifest['version']}); greedy decoding with "
        "the key/value cache, `no_repeat_ngram_size` 3. Inputs: the generator's test requests "
        "(CLINC150 test utterances with their slots and facts). Three backends in the same run: "
        "`torch` (PyTorch `generate`, the service's only path before), `onnx` (the "
        "artifact's ONNX decoder: encoder once, one cached decoder step per token, "
        "services/generator/onnx_decoding.py) and `onnx-int8` (its int8 graphs); "
        f"`GENERATOR_BACKEND=auto` serves `{result['default']}` for this artifact.",
        "",
        "| model (no HTTP) | " + " | ".join(BACKENDS) + " |",
        "|---|" + "---|" * len(BACKENDS),
        row(
            f"batch-1 p50 / p95 ms ({models['torch']['n']} requests)",
            lambda m: f"{m['p50_ms']:.1f} / {m['p95_ms']:.1f}",
        ),
        row(
            "batch-1 p50 ms, replies of 16-24 tokens",
            lambda m: f"{m['long_p50_ms']:.1f} ({m['long_n']})",
        ),
        row("mean tokens per reply", lambda m: f"{m['mean_tokens']:.1f}"),
        row(
            "the service's workers (batches decoded at once, a thread each)",
            lambda m: str(m.get("workers", 1)),
        ),
        row("tokens/s at batch 1", lambda m: f"{m['tokens_per_s_batch1']:.0f}"),
        row(
            "replies/s at batch 8 / 16",
            lambda m: f"{m['replies_per_s'][8]:.1f} / {m['replies_per_s'][16]:.1f}",
        ),
        row(
            "replies/s, a batch of 8 on each worker at once",
            lambda m: (
                f"{m['replies_per_s_side_by_side']:.1f}"
                if m.get("replies_per_s_side_by_side")
                else "-"
            ),
        ),
        "| model's own replies: template exact match / slot fidelity / chrF (test) | "
        + " | ".join(
            f"{100 * q['template_exact_match']:.2f} / {100 * q['slot_fidelity']:.2f} / "
            f"{q['chrf']:.1f}"
            for q in (result[b]["quality"]["model"] for b in BACKENDS)
        )
        + " |",
        "| served replies (after fallback): fallback rate | "
        + " | ".join(
            f"{100 * result[b]['quality']['served']['fallback_rate']:.2f} %" for b in BACKENDS
        )
        + " |",
        "",
        f"Rule-based template filler p50 (from the artifact's evaluation): "
        f"{ev.get('baseline_p50_ms', float('nan')):.3f} ms. The ONNX decoder's replies were "
        f"token for token those of `generate` on {100 * agreement.get('identical', 0):.1f} % "
        f"of {agreement.get('compared', 0)} validation requests at export. Validation "
        "figures recorded at export, which `auto` reads (int8 when its exact match and slot "
        "fidelity are within 0.5 points of fp32's): "
        + "; ".join(
            f"{k} {100 * v['val']['template_exact_match']:.2f} % exact match, "
            f"{100 * v['val']['slot_fidelity']:.2f} % slot fidelity"
            for k, v in backends.items()
            if "val" in v
        )
        + ".",
        "",
        "Service over HTTP (`POST /v1/generate`, async httpx client on 127.0.0.1, closed "
        "loop), whole batches (`GENERATOR_MAX_WAIT_MS` 20, ended early by a 3 ms pause in "
        "arrivals, `GENERATOR_MAX_GAP_MS`), on the ONNX backends one batch per worker at once "
        "(`GENERATOR_WORKERS`, one per core), a burst split evenly among idle workers; "
        "the last rows are the default backend with "
        "continuous batching (`GENERATOR_CONTINUOUS_BATCHING=true`, "
        "services/generator/scheduler.py):",
        "",
        "| backend | clients | replies/s | p50 ms | p95 ms | p99 ms | tokens/s | errors "
        "| client CPU | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    runs = [(b, result[b]["http"]) for b in BACKENDS]
    if "before" in result:
        runs.insert(0, (f"the service at {result['before']['revision']}", result["before"]["http"]))
    if "continuous" in result:
        runs.append((f"{result['default']}, continuous batching", result["continuous"]))
    for label, http in runs:
        for r in http["rows"]:
            errors = ", ".join(f"{n} x {k}" for k, n in r["status_codes"].items() if k != "200")
            lines.append(
                f"| {label} | {r['clients']} | {r['throughput']:.1f} | {r['p50_ms']:.1f} | "
                f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['tokens_per_s']:.0f} | "
                f"{errors or 0} | {r['client_cpu_share']:.0%} | "
                f"{http['memory']['peak_rss_mb']:.0f} |"
            )
    default = result["default"]
    onnx, torch_ = by_c[default], by_c["torch"]
    versus_before = []
    if "before" in result:
        old = {r["clients"]: r for r in result["before"]["http"]["rows"]}
        versus_before.append(
            f"| replies/s at {CONCURRENCY} clients, {default} / the service at "
            f"{result['before']['revision']} (same run) | "
            f"{onnx[CONCURRENCY]['throughput'] / old[CONCURRENCY]['throughput']:.2f} | >= 2 |"
        )
    q = {b: result[b]["quality"]["model"] for b in BACKENDS}
    lines += [
        "",
        f"| check ({default}, the default) | measured | target |",
        "|---|---|---|",
        f"| p50 at 1 client, typical (~{models[default]['mean_tokens']:.0f}-token) replies "
        f"(ms) | {onnx[1]['p50_ms']:.1f} | <= 40 |",
        f"| replies/s at {CONCURRENCY} clients, {default} / torch (same run) | "
        f"{onnx[CONCURRENCY]['throughput'] / torch_[CONCURRENCY]['throughput']:.2f} | >= 2 |",
        *versus_before,
        f"| template exact match, {default} - torch (points) | "
        f"{100 * (q[default]['template_exact_match'] - q['torch']['template_exact_match']):+.2f}"
        " | within 0.5 |",
        f"| slot fidelity, {default} - torch (points) | "
        f"{100 * (q[default]['slot_fidelity'] - q['torch']['slot_fidelity']):+.2f} "
        "| within 0.5 |",
        f"| model batch-1 p50 for 16-24-token replies (ms) | "
        f"{models[default]['long_p50_ms']:.1f} | <= 150 |",
        f"| throughput at {CONCURRENCY} clients / sequential | "
        f"{onnx[CONCURRENCY]['throughput'] / onnx[1]['throughput']:.2f} | >= 3 |",
        "",
        "On two cores a decoding step's cost grows with its rows, so one batch on one "
        "core gains little from more rows; the ONNX backends gain from a batch on each "
        "core at once (the model row 'a batch of 8 on each worker at once' against "
        "'replies/s at batch 8'; docs/results.md#decoding-backends).",
    ]
    return lines


def graph_variants(artifact: str, out_dir: Path) -> list[dict]:
    """The int8 variants tried for the two graphs, timed alone with ONNX Runtime (median of
    repeated runs, 2 threads) on the artifact's real test sources: the decoder step at a
    cache of 12 steps, the encoder over the padded batch. `python -m benchmarks.generator
    --variants`; the export's choice is training.generator_export.quantize_generator."""
    import json

    import numpy as np

    from services.generator.model import GeneratorModel
    from services.generator.onnx_decoding import session
    from training.export import quantize_weight_only
    from training.generator_export import (
        DECODER_STEP,
        DECODER_STEP_INT8,
        ENCODER,
        ENCODER_INT8,
        ONNX_DIR,
    )

    gen = GeneratorModel(artifact, backend="onnx")
    onnx_dir = Path(artifact) / ONNX_DIR
    rows = [json.loads(x) for x in (Path(artifact) / "test_replies.jsonl").open()]
    sources = [
        gen.source_of(GenerationRequest(r["intent"], r["text"], r["slots"], r["facts"]))
        for r in rows[::7]
    ]

    def weight_only(src: Path, bits: int, block: int) -> Path:
        dst = out_dir / f"{src.stem}.w{bits}b{block}.onnx"
        return quantize_weight_only(src, dst, bits=bits, block_size=block)

    def ms(sess, feeds) -> float:
        for _ in range(3):
            sess.run(None, feeds)
        times = []
        for _ in range(30):
            t = time.perf_counter()
            sess.run(None, feeds)
            times.append(time.perf_counter() - t)
        return 1000 * statistics.median(times)

    d = gen.decoder
    out = []
    for label, path in [
        ("encoder fp32", onnx_dir / ENCODER),
        ("encoder weight-only 8-bit, blocks of 128", weight_only(onnx_dir / ENCODER, 8, 128)),
        ("encoder static int8 (the export's)", onnx_dir / ENCODER_INT8),
    ]:
        sess = session(path, 2)
        row = {"graph": label}
        for b in (1, 16):
            ids, mask = gen.encode(sources[:b])
            row[f"batch {b}"] = ms(sess, {"input_ids": ids, "attention_mask": mask})
        out.append(row)
    step = onnx_dir / DECODER_STEP
    for label, path in [
        ("decoder step fp32", step),
        ("decoder step weight-only 8-bit, blocks of 32", weight_only(step, 8, 32)),
        ("decoder step weight-only 4-bit, blocks of 32", weight_only(step, 4, 32)),
        (
            "decoder step weight-only 8-bit, blocks of 128 (the export's)",
            onnx_dir / DECODER_STEP_INT8,
        ),
    ]:
        sess = session(path, 2)
        row = {"graph": label}
        for b in (1, 16):
            ids, mask = gen.encode(sources[:b])
            cross = d.encoder.run(d.cross_names, {"input_ids": ids, "attention_mask": mask})
            past = np.zeros((b, d.heads, 12, d.head_size), dtype=np.float32)
            feeds = {
                "input_ids": np.ones((b, 1), dtype=np.int64),
                "position_ids": np.full((b, 1), 12, dtype=np.int64),
                "encoder_attention_mask": mask,
                "self_attention_mask": np.ones((b, 13), dtype=np.int64),
                **dict(zip(d.cross_names, cross, strict=True)),
                **{name: past for name in d.past_names},
            }
            row[f"batch {b}"] = ms(sess, feeds)
        out.append(row)
    return out


if __name__ == "__main__":
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", default="artifacts/generator")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument(
        "--before", default=None, metavar="REV", help="also measure this revision's service"
    )
    parser.add_argument("--output", default=None, help="also write the figures as JSON")
    parser.add_argument(
        "--variants", action="store_true", help="time the int8 variants of the two graphs only"
    )
    args = parser.parse_args()
    if args.variants:
        with tempfile.TemporaryDirectory() as tmp:
            rows = graph_variants(args.artifact, Path(tmp))
        print("| graph | batch-1 ms | batch-16 ms |\n|---|---|---|")
        for r in rows:
            print(f"| {r['graph']} | {r['batch 1']:.2f} | {r['batch 16']:.2f} |")
        if args.output:
            Path(args.output).write_text(json.dumps(rows, indent=2))
        raise SystemExit(0)
    result = run(args.artifact, args.seconds, args.before)
    manifest = json.loads((Path(args.artifact) / "manifest.json").read_text())
    print("\n".join(markdown(result, args.artifact, manifest)))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))
