"""The review inbox over HTTP, for the review page (`/review`) and scripts: list, count and
decide, behind the gateway's admin key (GATEWAY_ADMIN_KEY). Export into a pack stays on the
command line (`parlance review export`): it writes files of the pack, next to its sources."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from parlance.review import ReviewError, ReviewItem
from services.common.admin import ADMIN_HEADER, require_admin
from services.common.errors import InvalidInput, NotFound, NotReady, error_responses
from services.gateway.api import STATIC

router = APIRouter(
    prefix="/v1/review",
    tags=["review"],
    dependencies=[Depends(ADMIN_HEADER), Depends(require_admin)],
    responses=error_responses(403, 503),
)
page_router = APIRouter()
Status = Literal["new", "accepted", "discarded", "exported", "all"]  # store.STATUSES + all


ItemId = Annotated[int, Field(ge=1, le=2**31 - 1)]


class Decision(BaseModel):
    ids: list[ItemId] = Field(..., min_length=1, max_length=500)
    decision: Literal["accept", "relabel", "discard"]
    label: str | None = Field(None, max_length=128, description="relabel: the right label")


class ItemsPage(BaseModel):
    items: list[ReviewItem]
    labels: list[str]  # what an item may be relabelled to: the pack's intents and `oos`


def _store(request: Request):
    store = getattr(request.app.state, "review", None)
    if store is None:
        raise NotReady(
            "the review inbox is not open yet: its database is unreachable (see the log)"
        )
    return store


async def _call(fn, *args):
    """A store call off the event loop; its refusals are 4xx, an unreachable database 503."""
    try:
        return await asyncio.to_thread(fn, *args)
    except ReviewError as e:
        if str(e).startswith("no captured turn"):
            raise NotFound(str(e)) from None
        raise InvalidInput(str(e)) from None
    except SQLAlchemyError as e:
        raise NotReady(f"the review inbox is unreachable ({type(e).__name__})") from None


def _labels(request: Request) -> list[str]:
    return list(request.app.state.pack.labels)


@router.get("/items", summary="Captured turns, newest first", response_model=ItemsPage)
async def items(
    request: Request,
    status: Status = "new",
    intent: str | None = Query(None, max_length=128, description="predicted label; oos too"),
    reason: str | None = Query(None, max_length=64),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=2**31 - 1),
) -> dict:
    store = _store(request)
    wanted = None if status == "all" else status
    found = await _call(store.items, wanted, intent, reason, limit, offset)
    return {"items": found, "labels": _labels(request)}


@router.get("/counts", summary="Captured turns per predicted label and status")
async def counts(request: Request, status: Status = "all") -> dict:
    wanted = None if status == "all" else status
    return {"counts": await _call(_store(request).counts, wanted)}


@router.post(
    "/decisions",
    summary="Accept, relabel or discard captured turns",
    responses=error_responses(404, 422),
)
async def decide(body: Decision, request: Request) -> dict:
    store = _store(request)
    if body.decision == "relabel" and body.label not in _labels(request):
        raise InvalidInput(
            f"label: {body.label!r} is not a label of pack {request.app.state.pack.name!r}"
        )
    done = await _call(store.decide, body.ids, body.decision, body.label)
    return {"items": [i.model_dump(mode="json") for i in done]}


@page_router.get("/review", include_in_schema=False)
async def review_page() -> FileResponse:
    """The review page: static HTML and JS like the chat page; it asks for the admin key."""
    return FileResponse(STATIC / "review.html", media_type="text/html")
