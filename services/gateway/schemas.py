"""Request and response bodies of the gateway API (contract: docs/contract.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: StrictStr | None = Field(None, description="created when absent", max_length=128)
    text: StrictStr


class IntentInfo(BaseModel):
    raw: str
    core: str
    confidence: float
    oos: bool


class FormState(BaseModel):
    active_form: str | None
    missing_slots: list[str]
    slots: dict[str, str] = Field(default_factory=dict, description="extension: form values")
    awaiting: str | None = None
    confirming: bool = False
    pending_intent: str | None = Field(
        None, description="extension: the intent the reply asks the user to confirm"
    )


class ChatResponse(BaseModel):
    session_id: str
    reply: str
    intent: IntentInfo
    slots: dict[str, str]
    reply_intent: str | None = Field(
        None,
        description="extension: the raw intent the reply answers (the classifier's, one the "
        "user confirmed, or that of a one-slot form just filled); null for form prompts "
        "and fallbacks",
    )
    state: FormState
    action: dict | None = Field(
        None,
        description="extension: the webhook action that ran this turn: name, outcome (ok, "
        "error: the back-end refused, failed: it could not be reached), error code or reason",
    )
    source: str = Field(..., description="generator | template | fulfilment | fallback | action")
