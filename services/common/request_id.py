"""X-Request-ID: taken from the request (or generated), echoed back, logged, passed upstream."""

from __future__ import annotations

import random
import re
from contextvars import ContextVar

HEADER = "X-Request-ID"
_current: ContextVar[str | None] = ContextVar("request_id", default=None)
# Accept what clients commonly send (UUIDs, trace ids); anything else is replaced, so a
# client cannot inject arbitrary text into our logs or upstream headers.
_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Request ids correlate log lines; they guard nothing, so they need uniqueness, not secrecy.
# uuid4 reads os.urandom on every request, a syscall that showed up in the service's profile
# under load; the random module's generator does not. Its module-level instance (not a
# private random.Random()) is the one Python reseeds in a forked child, so workers differ.


def get_request_id() -> str | None:
    return _current.get()


def set_request_id(value: str | None) -> None:
    _current.set(value)


def new_request_id(incoming: str | None) -> str:
    if incoming and _VALID.match(incoming):
        return incoming
    return f"{random.getrandbits(128):032x}"


def upstream_headers() -> dict[str, str]:
    rid = get_request_id()
    return {HEADER: rid} if rid else {}
