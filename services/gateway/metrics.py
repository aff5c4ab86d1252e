"""Gateway metrics (HTTP metrics come from services.common)."""

from __future__ import annotations

from aiobreaker import CircuitBreakerState
from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import PREFIX

# Bounded labels: 20 core intents x 4 sources; 2 upstreams; a handful of outcomes.
CHATS = Counter(
    f"{PREFIX}_gateway_chats_total",
    "Chat turns by core intent and source",
    ["core_intent", "source"],
)
FALLBACKS = Counter(
    f"{PREFIX}_gateway_fallbacks_total", "Turns answered by a fallback, by reason", ["reason"]
)
OOS = Counter(f"{PREFIX}_gateway_oos_total", "Turns classified out of scope")
FORMS = Counter(f"{PREFIX}_gateway_forms_total", "Form events", ["form", "event"])
ACTION_CALLS = Counter(
    f"{PREFIX}_gateway_action_calls_total",
    "Webhook action calls by outcome (ok, error, or why it failed)",
    ["action", "outcome"],
)
ACTION_SECONDS = Histogram(
    f"{PREFIX}_gateway_action_duration_seconds",
    "Webhook action call time, retries included",
    ["action"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ACTION_BREAKER = Gauge(
    f"{PREFIX}_gateway_action_breaker_state",
    "Circuit breaker of the action's endpoint: 0 closed, 1 half open, 2 open",
    ["action"],
)
CONFIRMATIONS = Counter(
    f"{PREFIX}_gateway_confirmations_total",
    "Borderline predictions: confirmation questions asked, and how users answered",
    ["event"],
)
UPSTREAM_SECONDS = Histogram(
    f"{PREFIX}_gateway_upstream_duration_seconds",
    "Upstream call time, retries included",
    ["upstream"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
UPSTREAM_ERRORS = Counter(
    f"{PREFIX}_gateway_upstream_errors_total",
    "Failed upstream calls by outcome",
    ["upstream", "outcome"],
)
BREAKER_STATE = Gauge(
    f"{PREFIX}_gateway_circuit_breaker_state",
    "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open",
    ["upstream"],
)
# The two breaker gauges' values (an unknown state reads as closed).
BREAKER_VALUE = {
    CircuitBreakerState.CLOSED: 0,
    CircuitBreakerState.HALF_OPEN: 1,
    CircuitBreakerState.OPEN: 2,
}
ACTIVE_SESSIONS = Gauge(f"{PREFIX}_gateway_active_sessions", "Sessions in the store")
RATE_LIMITED = Counter(f"{PREFIX}_gateway_rate_limited_total", "Requests refused with 429")
RATE_LIMIT_ERRORS = Counter(
    f"{PREFIX}_gateway_rate_limit_errors_total",
    "Rate-limit checks skipped because the limiter's store failed",
)
OVERLOADED = Counter(
    f"{PREFIX}_gateway_overloaded_total",
    "Turns refused with 429: too many in flight or an upstream at capacity",
)
TURNS_IN_FLIGHT = Gauge(f"{PREFIX}_gateway_turns_in_flight", "Chat and classify calls in flight")
AUTH_FAILURES = Counter(
    f"{PREFIX}_gateway_auth_failures_total", "Requests refused for a missing or wrong API key"
)
CAPTURED = Counter(
    f"{PREFIX}_gateway_review_captured_total",
    "Turns captured for review, by reason (one turn may count under several)",
    ["reason"],
)
CAPTURE_DROPPED = Counter(
    f"{PREFIX}_gateway_review_dropped_total",
    "Captures dropped: the write queue was full or the review database unreachable",
)
