"""The shared slot extractor and local fulfilment, on real CLINC150-style phrasings."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from parlance import actions as fulfilment
from parlance.actions import run_action
from parlance.pack import load_pack
from parlance.slots import SlotExtractor, duration_seconds

CLINC = load_pack("clinc150")


def fulfil(raw, slots, now=None, rng=None):
    """The facts the CLINC150 pack's action for `raw` computes."""
    return run_action(CLINC.intents[raw].action, slots, CLINC.slot_types, now=now, rng=rng)


NOW = datetime(2026, 11, 30, 15, 4, tzinfo=UTC)  # a Monday


@pytest.fixture(scope="module")
def x() -> SlotExtractor:
    return CLINC.extractor


def values(x, text, kinds=None):
    found = x.extract(text, kinds) if kinds else x.extract(text, now=NOW)
    return {k: s.value for k, s in found.items()}


@pytest.mark.parametrize(
    "text,kind,value,surface",
    [
        ("set a timer for five minutes", "duration", "5 minutes", "five minutes"),
        (
            "start counting down from 2 hours and 30 minutes",
            "duration",
            "2 hours 30 minutes",
            "2 hours and 30 minutes",
        ),
        ("remind me in half an hour", "duration", "30 minutes", "half an hour"),
        ("set alarm for 6am", "time", "6:00 AM", "6am"),
        ("wake me at 5:45 pm please", "time", "5:45 PM", "5:45 pm"),
        ("lunch at noon", "time", "12:00 PM", "noon"),
        (
            "send three hundred and fifty dollars to john",
            "money",
            "$350",
            "three hundred and fifty dollars",
        ),
        ("pay $12.50 now", "money", "$12.50", "$12.50"),
        ("what's the weather in new york city", "place", "New York", "new york city"),
        ("what timezone is viet nam in", "place", "Vietnam", "viet nam"),
        ("traffic on the way to the hopsital", "place", "the hospital", "hopsital"),
        ("how do i make beef stroganoff", "dish", "beef stroganoff", "beef stroganoff"),
        ("play some led zeppelin", "artist", "Led Zeppelin", "led zeppelin"),
        ("how do you spell asian", "word", "asian", "asian"),
        ("tell me how handkerchief is spelled", "word", "handkerchief", "handkerchief"),
        ("what is the meaning of flange", "word", "flange", "flange"),
        ("how do you say i need coffee in dutch", "phrase", "i need coffee", "i need coffee"),
        (
            "what is the equivalent of, 'life is good' in french",
            "phrase",
            "life is good",
            "life is good",
        ),
        ("will you roll a d20", "dice", "1d20", "d20"),
        ("roll two dice", "dice", "2d6", "two dice"),
        (
            "what is the square root of sixteen",
            "expression",
            "the square root of 16",
            "square root of sixteen",
        ),
        ("how much is 50 plus 756", "expression", "50 + 756", "50 plus 756"),
        ("what does 6 x 1 equal", "expression", "6 × 1", "6 x 1"),
        ("what is 15% of 3143", "expression", "15% of 3143", "15% of 3143"),
        ("what would four inches be in centimeters", "quantity", "4 inches", "four inches"),
        ("how many tablespoons are in a cup", "target_unit", "tablespoons", "tablespoons"),
    ],
)
def test_slot_values_and_spans(x, text, kind, value, surface):
    slot = x.extract(text, [kind], now=NOW)[kind]
    assert slot.value == value
    assert text[slot.start : slot.end] == surface  # spans point into the original text


def test_dates_resolve_against_the_given_clock(x):
    assert values(x, "book it for tomorrow", ["date"]) != {}  # wall clock works too
    got = x.extract("next friday works", ["date"], now=NOW)["date"].value
    assert got == "Friday, December 4"
    assert x.extract("on december 12th", ["date"], now=NOW)["date"].value == "Saturday, December 12"


def test_only_requested_kinds_and_nothing_invented(x):
    assert x.extract("hello there how are you", now=NOW) == {}
    assert set(x.extract("set a timer for 5 minutes in boston", ["duration"])) == {"duration"}
    with pytest.raises(ValueError, match="unknown slot types"):
        x.extract("hi", ["colour"])


def test_durations_in_seconds():
    assert duration_seconds("2 hours 30 minutes") == 9000
    assert duration_seconds("1 minute") == 60


@pytest.mark.parametrize(
    "expr,result",
    [
        ("50 + 756", "806"),
        ("sqrt 16", "4"),
        ("15 % of 3143", "471.45"),
        ("2 ^ 10", "1,024"),
        ("7 / 2", "3.5"),
        ("(2 + 3) * 4", "20"),
        ("1 / 3", "0.3333"),
        ("6 × 7", "42"),
        ("300 ÷ 4", "75"),
        ("the square root of 81", "9"),
        ("15% of 80", "12"),
    ],
)
def test_calculator(expr, result):
    assert fulfilment.calculate(expr) == result


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "2 ^ 100000",
        "9 ^ 9 ^ 9",
        "1 / 0",
        "sqrt -1",
        "x + 1",
        "1" * 300,
        "[1, 2]",
        "(lambda: 1)()",
    ],
)
def test_calculator_refuses_what_is_not_bounded_arithmetic(expr):
    assert fulfilment.calculate(expr) is None


def test_conversions():
    assert fulfilment.convert("3 feet", "inches") == "36 inches"
    assert fulfilment.convert("1 cup", "tablespoons") == "16 tablespoons"
    assert fulfilment.convert("100 degrees Celsius", "fahrenheit") == "212 degrees Fahrenheit"
    assert fulfilment.convert("3 feet", "kilograms") is None  # incompatible
    assert fulfilment.convert("3 parsecs", "inches") is None  # unknown


def test_fulfil_is_deterministic_and_uses_place_time_zones():
    a = fulfil("flip_coin", {}, NOW, random.Random(1))
    assert a == fulfil("flip_coin", {}, NOW, random.Random(1))
    assert a["outcome"] in ("heads", "tails")
    rolls = fulfil("roll_dice", {"dice": "2d6"}, NOW, random.Random(3))["outcome"]
    assert all(1 <= int(v) <= 6 for v in rolls.replace(" and", ",").split(", "))
    assert fulfil("time", {"place": "Tokyo"}, NOW)["time"] == "12:04 AM"
    assert fulfil("time", {}, NOW)["time"] == "3:04 PM"
    assert fulfil("date", {"place": "Tokyo"}, NOW)["date"] == "Tuesday, December 1"
    assert "UTC+9" in fulfil("timezone", {"place": "Tokyo"}, NOW)["timezone"]
    assert fulfil("spelling", {"word": "cat"})["spelled"] == "C-A-T"
    assert fulfil("calculator", {"expression": "6 * 7"})["result"] == "42"
    assert fulfil("calculator", {"expression": "6 / 0"}) == {}
    assert fulfil("greeting", {}) == {}  # no action bound


def _every_entry(gazetteer, ctx):
    """The gazetteer's matching without its substring prefilter: every entry's regex."""
    out, claimed = [], []
    for pattern, value, _ in gazetteer.patterns:
        for m in pattern.finditer(ctx.text):
            if all(m.end() <= a or m.start() >= b for a, b in claimed):
                claimed.append((m.start(), m.end()))
                out.append((gazetteer.display(value), m.start(), m.end()))
    return out


@pytest.mark.parametrize(
    "text",
    [
        "what time is it in NEW YORK",
        "directions to new york city from Paris",
        "How do you say hello in FRENCH and in german",
        "weather in Zürich, then in Paris",  # non-ASCII text: every entry is tried
        "flights to the UK from la",
        "is it raining in Tokyo?tokyo!",
        "translate 'good night' to Español or to italian",
    ],
)
def test_gazetteer_prefilter_finds_exactly_what_every_entry_finds(x, text):
    """The substring test before each entry's regex skips work, never a match: the same
    values and spans as trying every entry, in upper, lower and mixed case."""
    from parlance.slots import Context, Gazetteer

    gazetteers = [t for t in x.types.values() if isinstance(t, Gazetteer)]
    assert {"place", "language"} <= {t.name for t in gazetteers}
    matched = 0
    for variant in (text, text.upper(), text.lower()):
        for g in gazetteers:
            found = [(s.value, s.start, s.end) for s in Gazetteer.find(g, Context(variant))]
            assert found == _every_entry(g, Context(variant)), (g.name, variant)
            matched += len(found)
    assert matched  # each text names a place or a language: the comparison is not vacuous
