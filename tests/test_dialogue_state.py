"""The dialogue policy in process, where the point is its own state handling: forms expire by
the turn's clock (not the wall clock), the generator's own `source` reaches the response, and
stored session state is typed and versioned."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from parlance.pack import load_pack
from parlance.state import SCHEMA_VERSION, dump_state, load_state
from services.gateway.config import GatewaySettings
from services.gateway.dialogue import Dialogue, Prediction
from services.gateway.upstreams import UpstreamError

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class FakeGenerator:
    def __init__(self, source="model"):
        self.source, self.calls = source, []

    async def post(self, path, body):
        self.calls.append(body)
        if self.source is None:
            raise UpstreamError("generator", "unreachable")
        return {"reply": "generated", "source": self.source}


def dialogue(generator=None, **settings) -> Dialogue:
    return Dialogue(
        GatewaySettings(**settings), load_pack("clinc150"), generator or FakeGenerator()
    )


def turn(d, text, state, raw, now, conf=0.95):
    p = Prediction(raw, d.label_map.core_of(raw), conf, False)
    return asyncio.run(d.turn(text, state, p, now=now))


def test_form_expiry_follows_the_turns_clock():
    d = dialogue(form_idle_s=600)
    state = load_state(None)[0]
    r = turn(d, "book a flight from boston", state, "book_flight", T0)
    assert r.form["name"] == "book_flight"
    r = turn(d, "tokyo", state, "book_flight", T0 + timedelta(seconds=599))
    assert r.form["slots"] == {"origin": "Boston", "destination": "Tokyo"}
    r = turn(d, "friday", state, "oos", T0 + timedelta(seconds=599 + 601))
    assert r.reply.startswith("Your earlier request timed out") and r.form is None


def test_the_generators_own_source_and_the_raw_intent_travel():
    gen = FakeGenerator(source="template")
    d = dialogue(gen)
    r = turn(d, "hello", load_state(None)[0], "greeting", T0)
    assert r.source == "template"  # the generator fell back to a template itself
    assert gen.calls[-1]["raw_intent"] == "greeting" and gen.calls[-1]["intent"] == "small_talk"
    d = dialogue(FakeGenerator(source="model"))
    assert turn(d, "hello", load_state(None)[0], "greeting", T0).source == "generator"


def test_session_state_is_typed_and_versioned():
    state, dropped = load_state(
        {"schema_version": SCHEMA_VERSION, "misses": 1, "form": None, "last_reply": "hi"}
    )
    assert dropped is None and state["misses"] == 1
    assert load_state({"schema_version": 99})[1] == "schema version 99"
    assert load_state({"form": {"name": "x"}})[1].startswith("invalid")
    d = dialogue()
    state = load_state(None)[0]
    turn(d, "transfer $20 from checking", state, "transfer", T0)
    assert dump_state(state)["form"]["values"] == {"amount": "$20", "from_account": "checking"}


def test_the_packs_confidence_threshold_and_time_zone_apply(tmp_path):
    import shutil

    import yaml

    root = tmp_path / "pack"
    shutil.copytree(load_pack("clinc150").root, root)
    doc = yaml.safe_load((root / "dialogue.yml").read_text())
    doc["confidence_threshold"] = 0.99
    (root / "dialogue.yml").write_text(yaml.safe_dump(doc))
    d = Dialogue(GatewaySettings(), load_pack(root), FakeGenerator())
    r = turn(d, "book a flight", load_state(None)[0], "book_flight", T0, conf=0.95)
    assert r.source == "fallback" and r.form is None
    assert dialogue().default_timezone == "UTC"  # the pack's
    assert dialogue(default_timezone="Asia/Tokyo").default_timezone == "Asia/Tokyo"


def test_a_version_1_state_reads_as_the_current_one():
    old = {"schema_version": 1, "misses": 0, "last_reply": "hi", "form": None}
    state, dropped = load_state(old)
    assert dropped is None and state["schema_version"] == SCHEMA_VERSION
    assert state["pending"] is None


def test_yes_at_the_confirmation_of_a_cancellation_confirms_it():
    """ "yes, cancel it" answers "Do you want me to cancel booking BK-1180?": the word
    "cancel" there is not a request to abandon the form."""
    d = Dialogue(GatewaySettings(), load_pack("bike_shop"), FakeGenerator())
    state = load_state(None)[0]
    r = asyncio.run(
        d.turn(
            "cancel my booking BK-1180",
            state,
            Prediction("cancel_booking", d.label_map.core_of("cancel_booking"), 0.95, False),
            now=T0,
        )
    )
    assert r.form["confirming"] is True
    r = asyncio.run(d.turn("yes, cancel it", state, Prediction("yes", "yes", 0.9, False), now=T0))
    assert r.form is None and "is cancelled" in r.reply
