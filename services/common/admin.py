"""The admin key: what the model-swap endpoints (and the gateway's review inbox) ask for,
apart from the API keys that callers of the public endpoints hold."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from services.common.errors import Forbidden, error_responses

ADMIN_HEADER = APIKeyHeader(
    name="X-Admin-Key",
    scheme_name="AdminKey",  # apart from the gateway's API-key schemes in the OpenAPI doc
    auto_error=False,
    description="the service's admin key",
)


def presented_admin_key(request: Request) -> str:
    key = request.headers.get("x-admin-key")
    if key is None:
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    return key


async def require_admin(request: Request) -> None:
    """Route dependency: 403 unless the request carries the service's admin key (and when
    none is configured: the admin endpoints are off)."""
    configured = request.app.state.settings.admin_key
    if not configured:
        raise Forbidden("admin endpoints are disabled: set the service's ADMIN_KEY to use them")
    if not hmac.compare_digest(presented_admin_key(request).encode(), configured.encode()):
        raise Forbidden("missing or wrong admin key (X-Admin-Key)")


class SwapRequest(BaseModel):
    artifact: str = Field(
        ..., min_length=1, max_length=1000, description="artifact directory on the service's disk"
    )
    labels: list[str] | None = Field(
        None,
        description="classifier: the labels the caller (a gateway's pack) can answer; the "
        "new artifact must predict no other",
    )
    allow_label_change: bool = Field(
        False, description="classifier: accept an artifact whose labels differ from the served one"
    )


admin_router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(ADMIN_HEADER), Depends(require_admin)],
    responses=error_responses(403),
)


@admin_router.get("/model", summary="The served version, the previous one, swap history")
async def admin_model(request: Request) -> dict:
    return request.app.state.host.view()


@admin_router.post(
    "/model",
    summary="Load a new version in the background and switch to it (the old one keeps "
    "serving if it fails)",
    responses=error_responses(409, 422),
)
async def swap_model(body: SwapRequest, request: Request) -> dict:
    host = request.app.state.host
    return await host.swap(request.app, body.artifact, body.model_dump(exclude={"artifact"}))


@admin_router.post(
    "/rollback", summary="Swap back to the previous version", responses=error_responses(409, 422)
)
async def rollback(request: Request) -> dict:
    return await request.app.state.host.rollback(request.app)
