"""The response-data builder on the real CLINC150 files."""

from __future__ import annotations

from collections import Counter

import pytest

from parlance.pack import load_pack
from parlance.templates import placeholders
from training.data import load_clinc
from training.response_data import build_examples, checksum


@pytest.fixture(scope="module")
def data(clinc_path):
    return load_clinc(clinc_path, "full")


@pytest.fixture(scope="module")
def examples(data):
    return build_examples(data, seed=7)


def test_builder_is_deterministic(data, examples):
    again = build_examples(data, seed=7)
    assert checksum(again) == checksum(examples)
    assert checksum(build_examples(data, seed=8)) != checksum(examples)


def test_splits_stay_apart_and_cover_the_generated_intents(data, examples):
    sizes = {s: len(v) for s, v in examples.items()}
    assert sizes == {"train": 6700, "val": 1340, "test": 2010}  # 67 raw intents
    texts = {s: {e.text for e in v} for s, v in examples.items()}
    # No leak beyond CLINC150's own: the dataset has a few texts in both train and test.
    assert texts["train"] & texts["test"] <= set(data.train.texts) & set(data.test.texts)
    assert texts["val"] & texts["test"] <= set(data.val.texts) & set(data.test.texts)
    assert set(Counter(e.core_intent for e in examples["test"])) == set(
        load_pack().label_map.generated
    )
    for e in examples["test"]:
        assert e.text in data.test.texts


def test_targets_use_exactly_the_available_values(examples):
    responses = load_pack().responses
    for e in examples["train"]:
        available = set(e.slots) | set(e.facts)
        assert e.target in e.references
        assert set(e.references) <= set(responses.by_raw[e.raw_intent].replies)
        assert placeholders(e.target) <= available
    # most slotted inputs have a template using all their values
    slotted = [e for e in examples["train"] if e.slots or e.facts]
    exact = sum(placeholders(e.target) == set(e.slots) | set(e.facts) for e in slotted)
    assert exact / len(slotted) > 0.97
    # the calculator examples carry computed results
    calc = [e for e in examples["train"] if e.raw_intent == "calculator"]
    assert sum("result" in e.facts for e in calc) > 0.6 * len(calc)


def test_caps_and_intent_subsets(data):
    small = build_examples(
        data, intents={"timer", "greeting"}, max_per_intent={"train": 5, "test": 3}
    )
    assert Counter(e.raw_intent for e in small["train"]) == {"timer": 5, "greeting": 5}
    assert len(small["test"]) == 6 and len(small["val"]) == 40


def test_required_slots_are_answered_as_the_one_slot_form_would(examples):
    """An alarm request without a time never reaches the generator (the gateway asks first):
    its example carries a time another alarm request gave, and a reply that uses it."""
    pack = load_pack()
    for e in examples["train"]:
        intent = pack.intents[e.raw_intent]
        for r in intent.requires:
            assert r.slot in e.slots, (e.text, e.slots)
            assert f"<{r.slot}>" in e.target, (e.text, e.target)
    from training.response_data import BASE_CLOCK

    alarms = [e for e in examples["train"] if e.raw_intent == "alarm"]
    said = {
        t: pack.extract_slots(t, ["time"], BASE_CLOCK).get("time") for t in {e.text for e in alarms}
    }
    answered = [e for e in alarms if said[e.text] is None]
    assert answered, "CLINC150 has alarm requests without a time"
    assert {e.slots["time"] for e in answered} <= {v for v in said.values() if v}
