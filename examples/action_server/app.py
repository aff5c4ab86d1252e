"""An example back-end for the webhook actions of the bundled packs: what an assistant's
owner writes. It verifies the signature, acts once per idempotency key, and answers with
facts, a reply, or an error the user is told about (docs/actions.md).

    PARLANCE_ACTION_SECRET=... python -m examples.action_server --port 5055

Its "bank" and "workshop" live in memory. `GET /effects` says what it did (the tests count
that one confirmation is one effect, whatever the retries).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

from fastapi import FastAPI, HTTPException, Request

app = FastAPI(title="Example action server")
SECRET = os.environ.get("PARLANCE_ACTION_SECRET", "")
TOLERANCE_S = 300

BALANCES = {"checking": 1250.0, "savings": 8400.0, "credit card": -320.55}
BOOKINGS = {"BK-1180": "waiting for a part, ready on Friday", "BK-9043": "ready to collect"}
done: dict[str, dict] = {}  # idempotency key -> the reply given
effects: list[dict] = []  # what was actually done, once per key


def verified(body: bytes, header: str | None) -> bool:
    """The few lines every back-end needs: recompute the HMAC over "<t>." + body, compare
    in constant time, and refuse an old timestamp (a replay)."""
    try:
        parts = dict(p.split("=", 1) for p in (header or "").split(","))
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return abs(time.time() - t) <= TOLERANCE_S and hmac.compare_digest(
        expected.encode(), parts.get("v1", "").encode()
    )


def money(x: float) -> str:
    return f"-${-x:,.2f}" if x < 0 else f"${x:,.2f}"


def amount(value: str) -> float:
    return float(value.replace("$", "").replace(",", ""))


# ---------------------------------------------------------------- the actions


def account_balance(req: dict) -> dict:
    account = req["slots"].get("account", "checking")
    if account not in BALANCES:
        return {
            "error": {"code": "unknown_account", "message": f"I can't find a {account} account."}
        }
    return {"facts": {"balance": money(BALANCES[account])}}


def transfer_money(req: dict) -> dict:
    s = req["slots"]
    src, dst, x = s["from_account"], s["to_account"], amount(s["amount"])
    if BALANCES.get(src, 0.0) < x:
        return {
            "error": {
                "code": "insufficient_funds",
                "message": f"Your {src} account has only {money(BALANCES.get(src, 0.0))}.",
                "slot": "amount",
            }
        }
    BALANCES[src] -= x
    BALANCES[dst] = BALANCES.get(dst, 0.0) + x
    return {"facts": {"reference": f"TX-{len(effects) + 1:05d}"}}


def book_repair(req: dict) -> dict:
    number = f"BK-{2000 + len(effects)}"
    BOOKINGS[number] = f"booked for {req['slots'].get('date', 'the day you chose')}"
    return {"facts": {"booking_number": number}}


def known(ref: str) -> bool:
    # The example workshop knows every BK-1000..BK-9999 (BK-0xxx: "no such booking").
    return ref in BOOKINGS or not ref.replace("-", "").upper().startswith("BK0")


def unknown_booking(ref: str) -> dict:
    message = f"I can't find booking {ref}."
    return {"error": {"code": "unknown_booking", "message": message, "slot": "booking_ref"}}


def repair_status(req: dict) -> dict:
    ref = req["slots"]["booking_ref"].upper()
    if not known(ref):
        return unknown_booking(ref)
    return {"facts": {"repair_state": BOOKINGS.get(ref, "in the workshop queue")}}


def cancel_booking(req: dict) -> dict:
    ref = req["slots"]["booking_ref"].upper()
    if not known(ref):
        return unknown_booking(ref)
    BOOKINGS.pop(ref, None)
    return {}


ACTIONS = {
    f.__name__: f
    for f in (account_balance, transfer_money, book_repair, repair_status, cancel_booking)
}
# Look-ups change nothing: they need no record of having been done.
READ_ONLY = {"account_balance", "repair_status"}


@app.post("/actions/{name}")
async def run(name: str, request: Request) -> dict:
    body = await request.body()
    if not verified(body, request.headers.get("parlance-signature")):
        raise HTTPException(401, "bad or stale signature")
    req = await request.json()
    if name not in ACTIONS or req.get("action") != name:
        raise HTTPException(404, f"no action {name!r}")
    key = req["idempotency_key"]
    if key in done:  # a retry of something already done: the same answer, no second effect
        return done[key]
    reply = ACTIONS[name](req)
    if name not in READ_ONLY:
        done[key] = reply
        if "error" not in reply:
            effects.append({"action": name, "key": key, "slots": req["slots"]})
    return reply


@app.get("/effects")
async def list_effects() -> dict:
    return {"effects": effects}


@app.get("/readyz")
async def readyz() -> dict:
    return {"status": "ready"}
