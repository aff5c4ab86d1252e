"""X-Request-ID: taken from the request (or generated), echoed back, logged, passed upstream."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

HEADER = "X-Request-ID"
_current: ContextVar[str | None] = ContextVar("request_id", default=None)
# Accept what clients commonly send (UUIDs, trace ids); anything else is replaced, so a
# client cannot inject arbitrary text into our logs or upstream headers.
_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def get_request_id() -> str | None:
    return _current.get()


def set_request_id(value: str | None) -> None:
    _current.set(value)


def new_request_id(incoming: str | None) -> str:
    if incoming and _VALID.match(incoming):
        return incoming
    return uuid.uuid4().hex


def upstream_headers() -> dict[str, str]:
    rid = get_request_id()
    return {HEADER: rid} if rid else {}
