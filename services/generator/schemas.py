"""Request and response bodies of the generator API (contract: docs/contract.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The artifact's generated core intents are added to the OpenAPI document as an enum at
    # start-up (clients and fuzzers see the valid values); the service checks them itself so
    # that a wrong one gets its own clear message.
    intent: StrictStr = Field(..., description="a core intent answered by the generator")
    raw_intent: StrictStr | None = Field(
        None,
        description="extension: the raw intent, so a fallback template answers it "
        "rather than another intent of the same core intent",
    )
    text: StrictStr = Field(..., description="the user's text")
    slots: dict[StrictStr, StrictStr] = Field(
        default_factory=dict, description="slot name -> value taken from the user's text"
    )
    facts: dict[StrictStr, StrictStr] = Field(
        default_factory=dict, description="fact name -> value computed by the caller"
    )
    max_new_tokens: StrictInt | None = Field(None, description="generation budget (default 48)")
    timeout_ms: StrictInt | None = Field(
        None,
        description="extension: answer within this many ms or fail with 504 "
        "(capped by the server's deadline)",
    )


class ModelRef(BaseModel):
    version: str


class GenerateResponse(BaseModel):
    reply: str
    model: ModelRef
    generated_tokens: int = Field(..., description="tokens the model generated")
    source: str = Field(
        ...,
        description="extension: 'model', or 'template' when the model's "
        "reply failed a check and a template answered",
    )
