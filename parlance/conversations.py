"""`parlance test PACK`: the pack's scripted conversations (tests/*.yml) against a running
gateway, each in its own session; prints the pass rate and every failure with its reason."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from parlance.pack import load_pack
from parlance.pack.models import Conversation, Turn


@dataclass
class Outcome:
    file: str
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def check_turn(turn: Turn, body: dict) -> list[str]:
    """What in the gateway's answer differs from what the turn expects."""
    out = []
    intent, state = body["intent"], body["state"]
    reply = body["reply"].lower()
    if turn.intent is not None and intent["raw"] != turn.intent:
        out.append(
            f"intent {intent['raw']!r} ({intent['confidence']:.2f}), expected {turn.intent!r}"
        )
    if turn.form is not None:
        got = state["active_form"] or "none"
        if got != turn.form:
            out.append(f"form {got!r}, expected {turn.form!r}")
    if turn.awaiting is not None and state.get("awaiting") != turn.awaiting:
        out.append(f"awaiting {state.get('awaiting')!r}, expected {turn.awaiting!r}")
    slots = {**state.get("slots", {}), **body.get("slots", {})}
    for name, value in turn.slots.items():
        if slots.get(name, "").lower() != value.lower():
            out.append(f"slot {name} = {slots.get(name)!r}, expected {value!r}")
    for text in turn.reply_contains:
        if text.lower() not in reply:
            out.append(f"reply lacks {text!r}")
    for text in turn.reply_excludes:
        if text.lower() in reply:
            out.append(f"reply has {text!r}")
    if turn.source is not None and body["source"] != turn.source:
        out.append(f"source {body['source']!r}, expected {turn.source!r}")
    return out


def run_one(client, rel: str, conv: Conversation) -> Outcome:
    outcome = Outcome(rel, conv.name)
    session = f"test-{uuid.uuid4().hex[:12]}"
    for i, turn in enumerate(conv.turns):
        r = client.post("/v1/chat", json={"session_id": session, "text": turn.user})
        if r.status_code != 200:
            outcome.failures.append(
                f"turn {i + 1} {turn.user!r}: HTTP {r.status_code} {r.text[:200]}"
            )
            break
        body = r.json()
        problems = check_turn(turn, body)
        if problems:
            outcome.failures.append(
                f"turn {i + 1} {turn.user!r} -> {body['reply']!r}: " + "; ".join(problems)
            )
            break  # later turns depend on this one
    return outcome


def run_all(pack_ref, url: str, api_key: str | None = None) -> list[Outcome]:
    import httpx

    pack = load_pack(pack_ref)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
        return [
            run_one(client, rel, conv)
            for rel, doc in pack.conversations.items()
            for conv in doc.conversations
        ]


def run_conversations(pack_ref, url: str, api_key: str | None = None) -> int:
    outcomes = run_all(pack_ref, url, api_key)
    if not outcomes:
        print("no conversations in the pack's tests/ folder")
        return 1
    for o in outcomes:
        if not o.passed:
            print(f"FAIL {o.file}: {o.name}\n     " + "\n     ".join(o.failures))
    passed = sum(o.passed for o in outcomes)
    print(
        f"conversations: {passed} passed, {len(outcomes) - passed} failed "
        f"({100 * passed / len(outcomes):.1f} %)"
    )
    return 0 if passed == len(outcomes) else 1
