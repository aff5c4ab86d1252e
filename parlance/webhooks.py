"""The contract between the gateway and an assistant owner's back-end (webhook actions of a
pack's `actions.yml`): the request and reply bodies, the signature, the idempotency key and
the environment substitution of URLs and secrets. Plain code, no HTTP client: the gateway
calls (services/gateway/actions.py), a back-end verifies (examples/action_server/), and
docs/actions.md is generated from these models.

Signature, in the manner of Stripe's webhooks: the header

    Parlance-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>

signs the timestamp with the exact bytes sent, so a replay outside the tolerance window, or
a body changed on the way, fails verification.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from parlance.pack.models import ENV_REFERENCE

SIGNATURE_HEADER = "Parlance-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_TOLERANCE_S = 300
MAX_REPLY_BYTES = 64 * 1024  # a back-end's reply beyond this is refused unread


class IntentRef(BaseModel):
    raw: str
    core: str
    confidence: float


class ActionRequest(BaseModel):
    """What the gateway POSTs to the back-end."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(..., description="the action's name in actions.yml")
    idempotency_key: str = Field(
        ...,
        description="the same for every attempt of one submission (retries, 'try again'); "
        "a back-end that has seen it must not act twice",
    )
    session_id: str
    text: str = Field(..., description="the user's text of the turn that triggered the call")
    intent: IntentRef
    form: str | None = Field(None, description="the submitted form, or null for an intent")
    slots: dict[str, str] = Field({}, description="normalised slot values")
    pack: dict[str, str] = Field({}, description="name and version of the assistant pack")


class ActionError(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str = Field("error", max_length=64)
    message: str = Field(..., min_length=1, max_length=500, description="said to the user")
    slot: str | None = Field(
        None, description="a form slot to ask for again (its value is dropped), e.g. amount"
    )


class ActionReply(BaseModel):
    """What the back-end answers (HTTP 200, JSON); every field optional."""

    model_config = ConfigDict(extra="ignore")

    reply: str | None = Field(
        None, max_length=1000, description="said to the user instead of the templates"
    )
    facts: dict[str, str] = Field(
        {}, description="values for the templates' placeholders (or the generator's facts)"
    )
    slots: dict[str, str] = Field({}, description="slot values to set")
    error: ActionError | None = Field(
        None, description="the action refused: the message is said, a form asks again"
    )


# ------------------------------------------------------------------------ signatures


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `Parlance-Signature` header value for `body`."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(
    secret: str,
    body: bytes,
    header: str | None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether `header` signs `body` with `secret` within `tolerance_s` of now."""
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    # bytes, so a non-ASCII forgery is a mismatch, not a TypeError
    return hmac.compare_digest(expected.encode(), parts.get("v1", "").encode())


# ------------------------------------------------------------------------ idempotency


def submission_key(session_id: str, form_id: str, slots: Mapping[str, str]) -> str:
    """The key of one form submission: the same for every retry of the same values, a new
    one once a value changes."""
    canonical = json.dumps(
        [session_id, form_id, sorted(slots.items())], separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


# ------------------------------------------------------------------------ environment


class MissingVariable(ValueError):
    def __init__(self, variable: str, empty: bool = False):
        why = "is empty" if empty else "is not set (and has no default)"
        super().__init__(f"environment variable {variable} {why}")
        self.variable = variable


def resolve_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`${VAR}` and `${VAR:-default}` replaced from the environment."""
    env = os.environ if environ is None else environ

    def value(m) -> str:
        name, default = m.group(1), m.group(2)
        if env.get(name):
            return env[name]
        if default is not None:
            return default
        raise MissingVariable(name, empty=name in env)

    return ENV_REFERENCE.sub(value, text)


def json_schemas() -> dict[str, dict]:
    """The request and reply schemas, as docs/actions.md shows them."""
    return {
        "ActionRequest": ActionRequest.model_json_schema(),
        "ActionReply": ActionReply.model_json_schema(),
    }


SCHEMA_START = "<!-- schemas: generated by `python -m parlance.webhooks`; do not edit -->"
SCHEMA_END = "<!-- end of schemas -->"


def schemas_markdown() -> str:
    """The block of docs/actions.md between the two markers."""
    parts = [SCHEMA_START]
    for name, schema in json_schemas().items():
        parts += [f"`{name}`:", "", "```json", json.dumps(schema, indent=2), "```", ""]
    parts.append(SCHEMA_END)
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(schemas_markdown() + "\n")
