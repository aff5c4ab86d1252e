"""Request and response bodies of the classifier API (contract: docs/contract.md)."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, StrictStr


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[StrictStr] = Field(..., description="queries to classify, in order")
    top_k: StrictInt | None = Field(None, description="how many top intents to return (default 3)")
    now: AwareDatetime | None = Field(
        None,
        description="the request's clock (ISO 8601 with a UTC offset): relative dates in "
        "entities ('tomorrow') are read against it; default: the server's clock",
    )


class ScoredIntent(BaseModel):
    intent: str
    score: float


class ClassPrediction(BaseModel):
    intent: str = Field(..., description="top intent, or 'oos' when out of scope")
    confidence: float = Field(..., description="calibrated probability of the top class")
    oos: bool
    oos_score: float = Field(..., description="in-scope-ness under the artifact's OOS score")
    borderline: bool = Field(
        False,
        description="out of scope, but close enough to the threshold (the artifact's "
        "borderline band) that top_k[0] is worth confirming with the user",
    )
    top_k: list[ScoredIntent]
    entities: list[Entity] = Field(
        default_factory=list,
        description="slot spans found by the model's slot tagger (none for an intent-only model)",
    )


class Entity(BaseModel):
    entity: str = Field(..., description="the slot")
    value: str = Field(..., description="normalised by the slot's type")
    text: str = Field(..., description="the span as said: text[start:end]")
    start: int = Field(..., description="character offset into the text as sent")
    end: int = Field(..., description="end offset, exclusive")
    confidence: float = Field(..., description="mean probability of the span's word tags")


class ModelRef(BaseModel):
    version: str
    backend: str | None = None


class ClassifyResponse(BaseModel):
    predictions: list[ClassPrediction]
    model: ModelRef
