"""The reply templates: validation on load, invariants the checks rely on, the filler."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from services.common.label_map import load_label_map
from services.common.responses import (
    DEFAULT_PATH,
    ResponsesError,
    TemplateFiller,
    load_responses,
    placeholders,
)
from services.generator.text import invented_values


@pytest.fixture(scope="module")
def responses():
    return load_responses()


def test_every_generated_core_intent_has_eight_or_more_varied_replies(responses):
    label_map = load_label_map()
    assert sorted(responses.core_intents()) == sorted(label_map.generated)
    for core in label_map.generated:
        replies = [t for r in responses.raw_intents(core) for t in r.replies]
        assert len(replies) >= 8, core
        assert len(set(replies)) == len(replies), f"{core}: duplicate replies"
        # every raw intent of the core intent is covered
        assert {r.raw_intent for r in responses.raw_intents(core)} == \
            set(label_map.core[core].intents)


def test_templates_carry_no_values_of_their_own(responses):
    """The hallucination check counts any number or named entity not from the request;
    that is only sound if the templates themselves contain none."""
    for entry in responses.by_raw.values():
        for reply in entry.replies:
            bare = re.sub(r"<[a-z_]+>", "", reply)
            assert not re.search(r"\d", bare), reply
            assert invented_values(bare, "", {}) == [], reply


def test_each_slot_combination_that_occurs_has_a_reply(responses):
    for entry in responses.by_raw.values():
        # the empty combination (nothing extracted) must always be answerable
        assert entry.valid_replies(set(entry.facts) if entry.raw_intent != "timezone"
                                   else set()), entry.raw_intent
        full = set(entry.slots) | set(entry.facts)
        if entry.raw_intent != "play_music":  # artist or genre, not both
            assert any(placeholders(r) == full for r in entry.replies), entry.raw_intent


def write(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "responses.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def base_doc() -> dict:
    return yaml.safe_load(DEFAULT_PATH.read_text())


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["core_intents"].pop("small_talk"), "small_talk' has no replies"),
    (lambda d: d["core_intents"]["small_talk"].pop("greeting"), "no replies for raw intents"),
    (lambda d: d["core_intents"]["small_talk"]["greeting"]["replies"].append("Hi <place>"),
     "uses ['place']"),
    (lambda d: d["core_intents"]["small_talk"]["greeting"]["replies"].append("Top 3 tips"),
     "digit of its own"),
    (lambda d: d["core_intents"].__setitem__("account_info", {}), "not a generated core"),
    (lambda d: d["core_intents"]["small_talk"].__setitem__("balance", {"replies": ["x"]}),
     "not a raw intent of 'small_talk'"),
    (lambda d: d["core_intents"]["games_of_chance"]["roll_dice"].__setitem__("slots",
                                                                              ["colour"]),
     "unknown slot kinds"),
])
def test_bad_files_are_refused_with_a_message(tmp_path, mutate, message):
    doc = base_doc()
    mutate(doc)
    with pytest.raises(ResponsesError, match=re.escape(message)):
        load_responses(write(tmp_path, doc))


def test_missing_file(tmp_path):
    with pytest.raises(ResponsesError, match="not found"):
        load_responses(tmp_path / "nope.yaml")


def test_template_filler_is_deterministic_and_uses_the_values(responses):
    filler = TemplateFiller(responses)
    a = filler.reply("timers_and_alarms", "set a timer for 5 minutes",
                     {"duration": "5 minutes"}, {})
    assert a == filler.reply("timers_and_alarms", "set a timer for 5 minutes",
                             {"duration": "5 minutes"}, {})
    assert "5 minutes" in a
    calc = filler.reply("calculations_and_conversions", "what is 6 times 7",
                        {"expression": "6 * 7"}, {"result": "42"})
    assert "42" in calc
    assert filler.reply("small_talk", "hi", {}, {})
    assert filler.reply("account_info", "balance", {}, {}) is None  # not generated
