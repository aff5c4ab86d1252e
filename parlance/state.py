"""Dialogue state of one session, as stored between turns (memory or Redis).

Typed and versioned: what a gateway reads back is validated, and a state written by another
schema version (an upgrade with sessions in Redis) or damaged is dropped with a warning
instead of failing the turn."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 2
# Version 1 lacked the optional fields of a pending confirmation and of one-slot and
# action-bound forms; its states read as version 2 unchanged.
READABLE_VERSIONS = (1, 2)


class FormState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    values: dict[str, str] = {}
    awaiting: str | None = None
    confirming: bool = False
    updated: float = Field(..., description="unix time of the last change (the turn's clock)")
    text: str | None = Field(
        None, description="the request that opened a one-slot form, answered once it is filled"
    )
    id: str | None = Field(None, description="this form instance (its submission's key)")
    intent: str | None = Field(None, description="the intent that opened it")
    confidence: float | None = None
    failed: bool = Field(False, description="its submission could not reach the back-end")


class PendingIntent(BaseModel):
    """An intent the assistant asked the user to confirm (the borderline band)."""

    model_config = ConfigDict(extra="forbid")

    intent: str
    text: str
    confidence: float
    asked: float = Field(0.0, description="unix time of the question (the turn's clock)")


class SessionState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    form: FormState | None = None
    misses: int = 0  # consecutive fallbacks (the two-stage fallback)
    pending: PendingIntent | None = None
    last_reply: str | None = None


def load_state(raw: dict | None) -> tuple[dict, str | None]:
    """(state as a plain dict for the dialogue, why an unusable stored state was dropped)."""
    if not raw:
        return SessionState().model_dump(), None
    if raw.get("schema_version", SCHEMA_VERSION) not in READABLE_VERSIONS:
        return SessionState().model_dump(), f"schema version {raw.get('schema_version')!r}"
    try:
        return SessionState.model_validate(
            {**raw, "schema_version": SCHEMA_VERSION}
        ).model_dump(), None
    except ValidationError as e:
        return SessionState().model_dump(), f"invalid ({e.error_count()} errors)"


def dump_state(state: dict) -> dict:
    """The dialogue's dict, checked against the schema before it is stored."""
    return SessionState.model_validate(state).model_dump()
