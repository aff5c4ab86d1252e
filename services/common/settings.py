"""Settings shared by every service; each service subclasses with its own env prefix."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Common knobs. A subclass sets `model_config = SettingsConfigDict(env_prefix=...)`."""

    model_config = SettingsConfigDict(env_prefix="SERVICE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    log_json: bool = True
    # Bodies above this size are refused with 413 before they are parsed (TEI uses 2 MB).
    max_body_bytes: int = Field(2_000_000, ge=1024)
    # The key of the admin endpoints (model swaps; the gateway's review inbox), sent as
    # `X-Admin-Key` or `Authorization: Bearer`; empty: those endpoints are disabled.
    admin_key: str = Field("", repr=False)


class ModelServiceSettings(ServiceSettings):
    """What the model services (classifier, generator) add: where new versions may come
    from when swapped in while serving (docs/retraining.md)."""

    models_dir: str | None = Field(
        None,
        description="a directory of artifacts: swap requests name one inside it (relative "
        "names resolve there, paths outside are refused); with watch_s, its `current` link "
        "or file says which one to serve",
    )
    watch_s: float = Field(
        0.0, ge=0.0, description="seconds between looks at models_dir/current; 0: no watching"
    )
