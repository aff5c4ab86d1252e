"""Request and response bodies of the generator API (contract: docs/contract.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from services.common.label_map import load_label_map

# Documented as an enum in OpenAPI (clients and fuzzers see the valid values); checked by
# the service itself so that a wrong one gets its own clear message.
GENERATED_INTENTS = list(load_label_map().generated)


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    intent: StrictStr = Field(..., description="a core intent answered by the generator",
                              json_schema_extra={"enum": GENERATED_INTENTS})
    text: StrictStr = Field(..., description="the user's text")
    slots: dict[StrictStr, StrictStr] = Field(
        default_factory=dict, description="slot name -> value taken from the user's text")
    facts: dict[StrictStr, StrictStr] = Field(
        default_factory=dict, description="fact name -> value computed by the caller")
    max_new_tokens: StrictInt | None = Field(None, description="generation budget (default 48)")
    timeout_ms: StrictInt | None = Field(
        None, description="extension: answer within this many ms or fail with 504 "
                          "(capped by the server's deadline)")


class ModelRef(BaseModel):
    version: str


class GenerateResponse(BaseModel):
    reply: str
    model: ModelRef
    generated_tokens: int = Field(..., description="tokens the model generated")
    source: str = Field(..., description="extension: 'model', or 'template' when the model's "
                                         "reply failed a check and a template answered")
