"""Thin routes: parse, delegate to `service`, shape the response."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from services.common.app import app_settings, ready_model, served_view
from services.common.batcher import Batcher
from services.common.errors import error_responses
from services.generator import service
from services.generator.config import GeneratorSettings
from services.generator.model import GeneratorModel
from services.generator.schemas import GenerateRequest, GenerateResponse

router = APIRouter(tags=["generator"], responses=error_responses(503))

Ready = Annotated[tuple[GeneratorModel, Batcher], Depends(ready_model)]
Settings = Annotated[GeneratorSettings, Depends(app_settings)]


@router.post(
    "/v1/generate",
    response_model=GenerateResponse,
    responses=error_responses(413, 422, 429, 504),
    summary="Write a reply for a generated core intent",
)
async def generate(
    body: GenerateRequest, ready: Ready, settings: Settings, request: Request
) -> dict:
    model, batcher = ready
    result = await service.generate(body, settings, model.domain, batcher)
    return {
        "reply": result.reply,
        "model": {"version": model.version},
        "generated_tokens": result.generated_tokens,
        "source": result.source,
    }


@router.post("/invocations", response_model=GenerateResponse, include_in_schema=False)
async def invocations(
    body: GenerateRequest, ready: Ready, settings: Settings, request: Request
) -> dict:
    """SageMaker: the same body and answer as /v1/generate."""
    return await generate(body, ready, settings, request)


@router.get("/v1/model", summary="What is being served: manifest summary and decoding")
async def model_info(ready: Ready, request: Request) -> dict:
    return {**ready[0].info(), **served_view(request)}
