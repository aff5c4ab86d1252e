"""Thin routes: parse, authenticate, delegate to `service`, shape the response."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from services.classifier.schemas import ClassifyRequest
from services.common.errors import error_responses
from services.gateway import service
from services.gateway.schemas import ChatRequest, ChatResponse

STATIC = Path(__file__).parent / "static"


# Keys are enforced by security.GuardMiddleware before a route runs. The OpenAPI document
# names the two ways to present one (the app adds these schemes to its components); as
# `openapi_extra`, not as FastAPI security dependencies, which would run on every turn to
# refuse nothing.
API_KEY_SCHEMES = {
    "ApiKeyBearer": {"type": "http", "scheme": "bearer", "description": "an API key"},
    "ApiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "an API key",
    },
}
_KEYED = {"security": [{name: []} for name in API_KEY_SCHEMES]}
router = APIRouter(tags=["gateway"], responses=error_responses(401, 429))


@router.post(
    "/v1/chat",
    response_model=ChatResponse,
    summary="One turn of a conversation",
    responses=error_responses(413, 422, 503),
    openapi_extra=_KEYED,
)
async def chat(body: ChatRequest, request: Request) -> Response:
    s = request.app.state
    payload = await service.chat(
        body,
        s.settings,
        s.store,
        s.dialogue,
        s.classifier,
        s.label_map,
        s.label_error,
        s.recorder,
    )
    # The hot path: the dict serialised once, not re-validated against `response_model`
    # (which still documents the shape; the tests check bodies against it).
    return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")


@router.post(
    "/v1/classify",
    summary="The classifier's answer, with each core intent",
    responses=error_responses(413, 422, 503),
    openapi_extra=_KEYED,
)
async def classify(body: ClassifyRequest, request: Request) -> dict:
    s = request.app.state
    return await service.classify(
        body.model_dump(mode="json", exclude_none=True), s.classifier, s.label_map, s.settings
    )


@router.get(
    "/v1/labels",
    summary="The label map: raw -> core intents, generated ones",
    openapi_extra=_KEYED,
)
async def labels(request: Request) -> dict:
    return request.app.state.label_map.to_json()


@router.get("/", include_in_schema=False)
async def chat_page() -> FileResponse:
    """The chat page: static HTML and JS, no build step. It calls /v1/chat itself (with an
    API key the user types in, when keys are configured)."""
    return FileResponse(STATIC / "index.html", media_type="text/html")
