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
