"""Gateway settings (env prefix GATEWAY_; the upstream URLs also as CLASSIFIER_URL and
GENERATOR_URL, the names the contract gives them)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings

_UPSTREAM_URL = r"^https?://[^\s/?#]+(/\S*)?$"


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    port: int = Field(8000, ge=1, le=65535)
    # http(s), checked here so that a wrong URL stops the start with a readable message
    classifier_url: str = Field(
        "http://127.0.0.1:8001",
        validation_alias=AliasChoices("CLASSIFIER_URL", "GATEWAY_CLASSIFIER_URL"),
        pattern=_UPSTREAM_URL,
    )
    generator_url: str = Field(
        "http://127.0.0.1:8002",
        validation_alias=AliasChoices("GENERATOR_URL", "GATEWAY_GENERATOR_URL"),
        pattern=_UPSTREAM_URL,
    )
    # Per-call timeouts (seconds). The generator's is short on purpose: a slow generator
    # means a template reply now, not a slow answer.
    classifier_timeout_s: float = Field(2.0, gt=0)
    generator_timeout_s: float = Field(2.0, gt=0)
    connect_timeout_s: float = Field(0.5, gt=0)
    upstream_connections: int = Field(
        16, ge=1, le=1024, description="pooled connections per upstream"
    )
    # Retries only where safe: a connection that never reached the upstream.
    retries: int = Field(1, ge=0, le=5)
    # Circuit breaker per upstream: open after this many consecutive failures, probe again
    # after `breaker_reset_s`.
    breaker_fail_max: int = Field(5, ge=1)
    breaker_reset_s: float = Field(10.0, gt=0)

    # The assistant: a pack directory or a bundled pack's name
    pack: str = Field("clinc150", validation_alias=AliasChoices("PARLANCE_PACK", "GATEWAY_PACK"))

    # Dialogue
    confidence_threshold: float = Field(0.3, ge=0, le=1)  # Rasa's NLU fallback default
    session_ttl_s: int = Field(3600, ge=1)
    form_idle_s: int = Field(600, ge=1, description="a form expires after this idle time")
    default_timezone: str | None = Field(
        None, description="IANA zone for the time actions; default: the pack's"
    )
    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("REDIS_URL", "GATEWAY_REDIS_URL")
    )
    session_lock_timeout_s: float = Field(10.0, gt=0)
    actions_strict: bool = Field(
        False,
        description="refuse to start when a webhook action of the pack cannot be configured "
        "(an unset ${VAR}); default: disable it with a warning",
    )

    # Security
    api_keys: str = Field("", description="comma-separated keys; empty: no auth")
    rate_limit: str = Field(
        "120/minute", description="per key (or client address), `limits` notation; empty: none"
    )
    cors_origins: str = Field("", description="comma-separated origins allowed by CORS")
    max_text_chars: int = Field(1000, ge=1)
    max_texts: int = Field(
        64, ge=1, description="texts per /v1/classify call (as the classifier's default)"
    )
    # Little's law: in flight = turns/s x latency. 24 keeps p99 near 2 s at 2x the
    # measured capacity of a 2-core host (docs/reliability.md) and still allows ~700
    # turns/s at the usual 35 ms, more than one gateway process serves.
    max_in_flight: int = Field(
        24,
        ge=1,
        description="chat/classify calls in flight before 429 (beyond it: no queue, no timeout)",
    )
    log_user_text: bool = False

    # Learning from traffic (docs/retraining.md): turns worth a look go to a review inbox.
    capture: bool = Field(False, description="record turns worth a review (off by default)")
    review_db: str = Field(
        "parlance-review.db",
        validation_alias=AliasChoices("PARLANCE_REVIEW_DB", "GATEWAY_REVIEW_DB"),
        description="the review inbox: an SQLite file path, or a postgresql:// URL "
        "(several replicas share one)",
    )
    capture_reasons: str = Field(
        "all", description="comma-separated capture rules (parlance.review.capture.RULES)"
    )
    capture_low_confidence: float = Field(0.5, ge=0, le=1)
    capture_margin: float = Field(0.1, ge=0, le=1)
    capture_redact: bool = Field(
        True, description="replace e-mail addresses, phone and card numbers before writing"
    )
    capture_retention_days: float = Field(30.0, gt=0)
    capture_max_items: int = Field(100_000, ge=1)
    capture_queue: int = Field(1000, ge=1, description="captures waiting for the database")

    @property
    def keys(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]
