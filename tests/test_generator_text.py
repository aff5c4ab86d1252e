"""Serialisation, output clean-up and the reply checks the service relies on."""

from __future__ import annotations

from services.generator.text import (
    check_reply,
    clean_output,
    default_domain,
    delexicalise,
    is_degenerate,
    source_text,
)


def test_source_format_is_fixed_and_delexicalised():
    s = source_text("timers_and_alarms", "Set a timer for 5 minutes", {"duration": "5 minutes"}, {})
    assert s == (
        "intent: timers_and_alarms | slots: duration | facts: none | "
        "user: Set a timer for <duration>"
    )
    assert (
        source_text("small_talk", "hi", {}, {})
        == "intent: small_talk | slots: none | facts: none | user: hi"
    )
    assert (
        delexicalise("fly from NEW YORK to york", {"place": "new york"})
        == "fly from <place> to york"
    )
    tokens = default_domain().placeholder_tokens
    assert "<duration>" in tokens and "<result>" in tokens


def test_clean_output_detokenises_and_truecases():
    assert clean_output("i ' m parlance , your assistant .") == "I'm Parlance, your assistant."
    assert clean_output("okay , timer set for < duration > .") == "Okay, timer set for <duration>."
    assert (
        clean_output('let me translate " <phrase> " into <language> .')
        == 'Let me translate "<phrase>" into <language>.'
    )
    assert (
        clean_output("here ' s the carry - on rules . bye !") == "Here's the carry-on rules. Bye!"
    )


def test_check_accepts_a_faithful_reply_and_fills_it():
    c = check_reply(
        "<expression> is <result>.", "what is 6 times 7", {"expression": "6 * 7"}, {"result": "42"}
    )
    assert c.ok and c.reply == "6 * 7 is 42."


def test_check_rejects_unfilled_missing_and_invented():
    c = check_reply(
        "Your alarm is set for <time>.", "set a timer for 5 minutes", {"duration": "5 minutes"}, {}
    )
    assert not c.ok
    assert c.unknown_placeholders == ["time"] and c.missing_values == ["duration"]
    c = check_reply(
        "Okay, timer set for 10 minutes.",
        "set a timer for <duration>",
        {"duration": "5 minutes"},
        {},
    )
    assert "10" in c.invented
    c = check_reply("Here's the weather in Paris.", "weather please", {}, {})
    assert c.invented == ["Paris"]
    c = check_reply("Here's the weather in Paris.", "weather in paris please", {}, {})
    assert c.ok  # the user said it
    c = check_reply("Heading to the airport now.", "take me to the airport", {}, {})
    assert c.ok


def test_degenerate_replies():
    assert is_degenerate("")
    assert is_degenerate("would be would be would be")
    assert is_degenerate("the the the answer")
    assert is_degenerate("that is.........")
    assert not is_degenerate("Rolling... <outcome>!")
    assert not is_degenerate("Okay, timer set for <duration>.")
