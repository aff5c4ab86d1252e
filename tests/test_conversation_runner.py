"""`parlance test`'s own checks: a template reply must belong to the intent it answers, and
conversations that cannot run against this gateway are skipped with the reason."""

from __future__ import annotations

import pytest

from parlance.conversations import RunOptions, TemplateFit, check_turn, skip_reason
from parlance.pack import load_pack
from parlance.pack.models import Conversation, Turn
from parlance.templates import fill


@pytest.fixture(scope="module")
def clinc():
    return load_pack("clinc150")


def body(reply: str, reply_intent: str | None, source: str = "template") -> dict:
    return {
        "reply": reply,
        "reply_intent": reply_intent,
        "source": source,
        "slots": {},
        "intent": {"raw": reply_intent or "oos", "confidence": 0.9},
        "state": {"active_form": None, "slots": {}, "awaiting": None, "pending_intent": None},
    }


def test_a_template_reply_of_another_intent_fails(clinc):
    fit = TemplateFit(clinc)
    turn = Turn(user="hello")
    hello = clinc.responses.by_raw["greeting"].replies[0]
    made_by = clinc.responses.by_raw["who_made_you"].replies[0]
    assert check_turn(turn, body(hello, "greeting"), fit) == []
    assert check_turn(turn, body(made_by, "greeting"), fit) == [
        "template reply is not one of 'greeting''s templates"
    ]
    # filled placeholders match, and the check is only for template replies
    alarm = fill(clinc.responses.by_raw["alarm"].replies[0], {"time": "7:00 AM"})
    assert check_turn(turn, body(alarm, "alarm"), fit) == []
    assert check_turn(turn, body(made_by, "greeting", source="generator"), fit) == []
    # a digression's answer followed by the form's prompt still fits
    resumed = f"{hello} Back to what we were doing: What time should I set the alarm for?"
    assert check_turn(turn, body(resumed, "greeting"), fit) == []


def test_expectations_of_the_new_fields(clinc):
    b = body("Do you want to book a flight?", None, source="fallback")
    b["state"]["pending_intent"] = "book_flight"
    assert check_turn(Turn(user="flight", confirming="book_flight"), b) == []
    assert check_turn(Turn(user="flight", confirming="book_hotel"), b) == [
        "confirming 'book_flight', expected 'book_hotel'"
    ]


def test_skip_reasons():
    conv = Conversation(
        name="c",
        generator="down",
        turns=[Turn(user="set an alarm", intent="alarm"), Turn(user="7am", idle=True)],
    )
    assert skip_reason(conv, RunOptions(generator="up", idle_s=1)) == "needs the generator down"
    assert skip_reason(conv, RunOptions(generator="down")) == "needs --form-idle-s"
    lacking = RunOptions(generator="down", idle_s=1, intents=frozenset({"timer"}))
    assert skip_reason(conv, lacking) == "the classifier lacks ['alarm']"
    assert skip_reason(conv, RunOptions(generator="down", idle_s=1)) is None


def test_a_short_template_does_not_fit_inside_another_reply(clinc):
    fit = TemplateFit(clinc)
    greeting_then_time = "Hi there! What can I do for you today? It's 3:00 PM."
    # time's "It's <time>." is found inside it, but the whole reply is not that template
    assert fit.problem("time", greeting_then_time) == (
        "template reply is not one of 'time''s templates"
    )
    assert fit.problem("time", "It's 3:00 PM.") is None
    expired = clinc.dialogue.form.expired + " " + clinc.responses.by_raw["greeting"].replies[0]
    assert fit.problem("greeting", expired) is None
