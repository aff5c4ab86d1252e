"""Thin routes: parse, delegate to `service`, shape the response."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from services.classifier import service
from services.classifier.config import ClassifierSettings
from services.classifier.model import ClassifierModel
from services.classifier.schemas import ClassifyRequest, ClassifyResponse
from services.common.app import app_settings, ready_model, served_view
from services.common.batcher import Batcher
from services.common.errors import error_responses

router = APIRouter(tags=["classifier"], responses=error_responses(503))


Ready = Annotated[tuple[ClassifierModel, Batcher], Depends(ready_model)]
Settings = Annotated[ClassifierSettings, Depends(app_settings)]


@router.post(
    "/v1/classify",
    response_model=ClassifyResponse,
    responses=error_responses(413, 422, 429),
    summary="Classify texts into intents, with out-of-scope detection",
)
async def classify(body: ClassifyRequest, ready: Ready, settings: Settings) -> Response:
    model, batcher = ready
    preds = await service.classify(body, settings, batcher)
    # The hot path: plain dicts serialised once. `response_model` still documents the
    # shape in OpenAPI, and tests check the body against it.
    payload = {
        "predictions": [
            {
                "intent": p.intent,
                "confidence": p.confidence,
                "oos": p.oos,
                "oos_score": p.oos_score,
                "borderline": p.borderline,
                "top_k": [{"intent": i, "score": s} for i, s in p.top_k],
                "entities": [asdict(e) for e in p.entities],
            }
            for p in preds
        ],
        "model": {"version": model.version, "backend": model.backend.name},
    }
    return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")


@router.post("/invocations", response_model=ClassifyResponse, include_in_schema=False)
async def invocations(body: ClassifyRequest, ready: Ready, settings: Settings) -> Response:
    """SageMaker: the same body and answer as /v1/classify."""
    return await classify(body, ready, settings)


@router.get("/v1/model", summary="What is being served: manifest summary and backend")
async def model_info(ready: Ready, request: Request) -> dict:
    return {**ready[0].info(), **served_view(request)}
