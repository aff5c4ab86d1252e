"""Generator benchmarks: the raw model (batch-1 latency, tokens/s, batched throughput) and
the service over real HTTP (1 client vs 16 concurrent clients), with its memory.

The requests are the generator's real test inputs (CLINC150 test utterances of the generated
intents, with the slots and facts the builder gives them). The load generator is an async
httpx client: a generation takes tens of milliseconds, so the client's own cost is small
next to it (its CPU share is reported).
"""

from __future__ import annotations

import asyncio
import random
import resource
import statistics
import time

import httpx

from benchmarks.http_load import rss_mb, server

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


def bench_model(artifact: str, bodies: list[dict], n: int = 200) -> dict:
    from services.generator.model import GenerationRequest, GeneratorModel

    gen = GeneratorModel(artifact)
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
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


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


def bench_http(artifact: str, bodies: list[dict], seconds: int) -> dict:
    env = {"GENERATOR_LOG_LEVEL": "WARNING"}
    with server(["services.generator", "--artifact", artifact], env) as (url, pid):
        asyncio.run(_load(url, bodies, 4, 3))  # warm-up
        rows = [asyncio.run(_load(url, bodies, c, seconds)) for c in (1, CONCURRENCY)]
        return {"rows": rows, "memory": rss_mb(pid)}


def run(artifact: str, seconds: int = 15) -> dict:
    bodies = test_requests()
    return {"model": bench_model(artifact, bodies), "http": bench_http(artifact, bodies, seconds)}


def markdown(result: dict, artifact: str, manifest: dict) -> list[str]:
    m, rows = result["model"], result["http"]["rows"]
    by_c = {r["clients"]: r for r in rows}
    ev = manifest.get("evaluation", {}).get("latency", {})
    lines = [
        "",
        "## Generator",
        "",
        f"Artifact: `{artifact}` ({manifest['base_model']}, {manifest['architecture']}, "
        f"{manifest['preset']} preset, version {manifest['version']}); greedy decoding, KV "
        "cache, `no_repeat_ngram_size` 3. Inputs: the generator's test requests (CLINC150 "
        "test utterances with their slots and facts).",
        "",
        "| model (no HTTP) | value |",
        "|---|---|",
        f"| batch-1 p50 / p95 ms ({m['n']} requests) | {m['p50_ms']:.1f} / {m['p95_ms']:.1f} |",
        f"| batch-1 p50 ms, replies of 16-24 tokens ({m['long_n']} of them) | "
        f"{m['long_p50_ms']:.1f} |",
        f"| mean tokens per reply | {m['mean_tokens']:.1f} |",
        f"| tokens/s at batch 1 | {m['tokens_per_s_batch1']:.0f} |",
        f"| replies/s at batch 8 / 16 | {m['replies_per_s'][8]:.1f} / "
        f"{m['replies_per_s'][16]:.1f} |",
        f"| peak RSS MB (model process) | {m['rss_mb']:.0f} |",
        f"| rule-based template filler p50 ms (from the artifact's evaluation) | "
        f"{ev.get('baseline_p50_ms', float('nan')):.3f} |",
        "",
        "Service over HTTP (`POST /v1/generate`, async httpx client on 127.0.0.1, closed loop):",
        "",
        "| clients | replies/s | p50 ms | p95 ms | p99 ms | tokens/s | errors | client CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        errors = ", ".join(f"{n} x {k}" for k, n in r["status_codes"].items() if k != "200")
        lines.append(
            f"| {r['clients']} | {r['throughput']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['tokens_per_s']:.0f} | "
            f"{errors or 0} | {r['client_cpu_share']:.0%} |"
        )
    mem = result["http"]["memory"]
    ratio = by_c[CONCURRENCY]["throughput"] / by_c[1]["throughput"]
    lines += [
        "",
        "| check | measured | target |",
        "|---|---|---|",
        f"| p50 at 1 client, typical (~{m['mean_tokens']:.0f}-token) replies (ms) | "
        f"{by_c[1]['p50_ms']:.1f} | <= 150 |",
        f"| model batch-1 p50 for 16-24-token replies (ms) | {m['long_p50_ms']:.1f} | <= 150 |",
        f"| throughput at {CONCURRENCY} clients / sequential | {ratio:.2f} | >= 3 |",
        f"| service peak resident memory (MB) | {mem['peak_rss_mb']:.0f} | reported |",
    ]
    return lines
