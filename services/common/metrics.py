"""Prometheus metrics shared by every service: HTTP requests and the batcher.

Naming follows Prometheus conventions: a `parlance_` prefix, base units (`_seconds`),
`_total` on counters, and only bounded label values (route templates, never raw paths, user
text or session ids).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# `*_created` timestamps double the series count and no dashboard here reads them.
disable_created_metrics()

PREFIX = "parlance"
# Latency buckets from 1 ms to 10 s: model calls here range from ~2 ms to seconds.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

HTTP_REQUESTS = Counter(
    f"{PREFIX}_http_requests_total", "HTTP requests handled", ["route", "method", "status_class"]
)
HTTP_LATENCY = Histogram(
    f"{PREFIX}_http_request_duration_seconds",
    "HTTP request latency, from first byte in to response start",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(f"{PREFIX}_http_requests_in_flight", "HTTP requests being handled")

BATCH_SIZE = Histogram(
    f"{PREFIX}_batch_size",
    "Items per model batch",
    ["batcher"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
QUEUE_DEPTH = Gauge(f"{PREFIX}_queue_depth", "Items waiting for a batch", ["batcher"])
QUEUE_SECONDS = Histogram(
    f"{PREFIX}_queue_duration_seconds",
    "Time an item waited in the queue",
    ["batcher"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    f"{PREFIX}_inference_duration_seconds",
    "Model time per batch (tokenisation included)",
    ["batcher"],
    buckets=LATENCY_BUCKETS,
)
REJECTED = Counter(f"{PREFIX}_overload_rejections_total", "Requests refused with 429", ["batcher"])
DROPPED = Counter(
    f"{PREFIX}_dropped_items_total",
    "Queued items skipped because their client went away",
    ["batcher"],
)


def render_latest() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


MODEL_SWAPS = Counter(
    f"{PREFIX}_model_swaps_total",
    "Model versions swapped in while serving, by outcome (swapped, load_failed, refused)",
    ["service", "outcome"],
)
MODEL_LOADED_AT = Gauge(
    f"{PREFIX}_model_loaded_timestamp_seconds",
    "When the served model version was loaded (its version is in the service's model info)",
    ["service"],
)
