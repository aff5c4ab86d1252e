"""Raw backend speed: batch-1 latency and throughput by batch size, no HTTP.

Texts are real CLINC150 test queries (or a fixed set of sample queries when the data set is
not available), so the token lengths are those the service will see.
"""

from __future__ import annotations

import statistics
import time

from services.classifier.backends import Backend

SAMPLE = [
    "what is my checking account balance",
    "set a timer for ten minutes",
    "how do i say good morning in french",
    "book me a flight to paris next tuesday",
    "is it going to rain tomorrow",
    "what's the apr on my visa card",
    "i need to transfer 200 dollars to my savings",
    "tell me a joke",
]


def latency_batch1(backend: Backend, texts: list[str], n: int = 300, warmup: int = 20) -> dict:
    for t in texts[:warmup]:
        backend.forward([t])
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        backend.forward([texts[i % len(texts)]])
        times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "p50_ms": 1000 * statistics.median(times),
        "p95_ms": 1000 * times[int(0.95 * (len(times) - 1))],
        "mean_ms": 1000 * statistics.fmean(times),
    }


def throughput(backend: Backend, texts: list[str], batch_size: int, seconds: float = 4.0) -> float:
    """Texts per second at a fixed batch size, over about `seconds` of work."""
    batches = [texts[i : i + batch_size] for i in range(0, len(texts) - batch_size + 1, batch_size)]
    backend.forward(batches[0])  # warm-up
    done, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        backend.forward(batches[i % len(batches)])
        done += batch_size
        i += 1
    return done / (time.perf_counter() - start)
