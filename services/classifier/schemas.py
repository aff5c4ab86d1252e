"""Request and response bodies of the classifier API (contract: docs/contract.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[StrictStr] = Field(..., description="queries to classify, in order")
    top_k: StrictInt | None = Field(None, description="how many top intents to return (default 3)")


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


class ModelRef(BaseModel):
    version: str
    backend: str | None = None


class ClassifyResponse(BaseModel):
    predictions: list[ClassPrediction]
    model: ModelRef
