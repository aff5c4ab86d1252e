"""Slot types and extraction from user text, shared by the generator's data builder and the
gateway (one extractor, so the slots the generator is trained on are exactly the slots the
gateway passes it).

A slot type is a small object with a `find(ctx)` method, kept in a registry: the built-in
types below, plus a pack's own types (`list` of values with synonyms, `regex`, `free_text`)
built by `pack_types`. Each built-in is one explainable rule:

- number words become digits first (`text2num`), so "five minutes" and "5 minutes" agree;
- `duration`, `time`, `money`, `number`: regular expressions over the digit-normalised text;
- `date`: a regular expression finds the date-like span and `dateparser` resolves it
  against the request's clock (relative dates such as "next friday" need one);
- `place`, `language`: gazetteers (`resources/places.yaml`), whole words, longest first;
- `word`, `phrase`, `expression`, `quantity`/`target_unit`, `dice`, `task`: patterns for
  spelling/definition, translation, calculator, unit conversion, dice and reminder requests.

Types run in a fixed order (`order`): specific patterns claim their numbers before `number`
does. Values are normalised for display ("5:45 AM", "30 minutes", "New York", "$350"); every
slot keeps the span of the original text it came from, so callers can delexicalise the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, cached_property
from pathlib import Path

import yaml

RESOURCES = Path(__file__).parent / "resources"

_LOWER_WORDS = {"de", "and", "of", "the"}


@dataclass(frozen=True)
class Slot:
    kind: str  # the slot type's name
    value: str
    start: int  # span in the text given to `extract`, end exclusive
    end: int
    # The slot it fills, when known: a learned span (the classifier's slot tagger names the
    # slot, not only its type). Rule matches leave it to the caller.
    name: str | None = None


def _title(name: str) -> str:
    words = name.split(" ")
    return " ".join(
        w if (i and w in _LOWER_WORDS) else w[:1].upper() + w[1:] for i, w in enumerate(words)
    )


@cache
def load_gazetteers(path: str | Path = RESOURCES / "places.yaml") -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def place_timezone(place: str) -> str | None:
    """IANA time zone of a city or country from the gazetteer (None for venues/unknown)."""
    g = load_gazetteers()
    key = place.lower()
    key = g["place_aliases"].get(key, key)
    return g["cities"].get(key) or g["countries"].get(key)


# ---------------------------------------------------------------- digit normalisation


def _digits(text: str) -> tuple[str, list[int]]:
    """`text` with number words as digits, and for each character of the result the offset
    of the original character it came from (so spans map back to the user's text)."""
    from text_to_num import alpha2digit

    out = alpha2digit(text, "en", threshold=0)
    if out == text:
        return text, list(range(len(text) + 1))
    # Align by words: alpha2digit rewrites whole number phrases and keeps other words.
    return out, _align(text, out)


def _align(src: str, dst: str) -> list[int]:
    """Map each offset of `dst` to an offset of `src` by matching unchanged words in order;
    characters of rewritten words map to the start of the source phrase they replaced."""
    import difflib

    src_tokens = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", src)]
    dst_tokens = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", dst)]
    sm = difflib.SequenceMatcher(
        a=[t[2] for t in src_tokens], b=[t[2] for t in dst_tokens], autojunk=False
    )
    mapping = [0] * (len(dst) + 1)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        for k in range(j1, j2):
            ds, de, _ = dst_tokens[k]
            if tag == "equal":
                ss = src_tokens[i1 + k - j1][0]
                for c in range(ds, de + 1):
                    mapping[c] = ss + (c - ds)
            else:
                # A rewritten phrase: its first char maps to the phrase start, its end to
                # the phrase end, so a slot covering the digits covers the words.
                s0 = src_tokens[i1][0] if i1 < len(src_tokens) else len(src)
                s1 = src_tokens[i2 - 1][1] if i2 > i1 else s0
                for c in range(ds, de):
                    mapping[c] = s0
                mapping[de] = s1
    # Fill whitespace gaps monotonically.
    for c in range(1, len(mapping)):
        if mapping[c] < mapping[c - 1]:
            mapping[c] = mapping[c - 1]
    mapping[len(dst)] = len(src)
    return mapping


# ---------------------------------------------------------------- patterns

_NUM = r"\d+(?:[.,]\d+)?"
_UNIT_SECONDS = {
    "second": 1,
    "sec": 1,
    "minute": 60,
    "min": 60,
    "hour": 3600,
    "hr": 3600,
    "day": 86400,
}
_DURATION = re.compile(
    rf"\b(?:(?P<n>{_NUM})\s*[- ]?\s*(?P<u>seconds?|secs?|minutes?|mins?|hours?|hrs?|days?)"
    rf"(?:\s*(?:and\s*)?(?P<n2>{_NUM})\s*(?P<u2>seconds?|minutes?|mins?))?"
    r"|(?P<half>half an hour|an hour and a half|an hour|a minute|a half hour|a day))\b",
    re.I,
)
_TIME = re.compile(
    r"\b(?:(?P<h>\d{1,2})(?::(?P<m>\d{2})|\s(?P<m2>[0-5]\d)(?=\s*(?:a\.?m\.?|p\.?m\.?|in the "
    r"morning|in the afternoon|in the evening|at night)))?\s*"
    r"(?P<ap>a\.?m\.?|p\.?m\.?|o'?clock|in the morning|in the afternoon|in the evening|"
    r"at night)(?![a-z])"
    r"|(?P<hh>\d{1,2}):(?P<mm>[0-5]\d)|(?P<word>noon|midnight))",
    re.I,
)
_MONEY = re.compile(
    rf"(?:(?P<sym>[$€£])\s?(?P<a>{_NUM})|(?P<b>{_NUM})\s?(?P<cur>dollars?|bucks|usd|euros?|eur|"
    r"pounds? sterling|gbp))\b",
    re.I,
)
_NUMBER = re.compile(rf"(?<![\w.]){_NUM}(?![\w.])")
_WEEKDAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|"
    "december|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_DATE = re.compile(
    rf"\b(?:day after tomorrow|today|tonight|tomorrow|"
    rf"(?:next|this|coming)\s+(?:week|month|{_WEEKDAYS})|(?:on\s+)?(?:{_WEEKDAYS})|"
    rf"in\s+\d+\s+(?:days?|weeks?)|"
    rf"(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?|"
    rf"\d{{1,2}}(?:st|nd|rd|th)?\s+of\s+(?:{_MONTHS})|"
    rf"\d{{1,2}}/\d{{1,2}}(?:/\d{{2,4}})?)\b",
    re.I,
)
_SPELL = re.compile(
    r"\bspell(?:ing|ed)?(?:\s+(?:of|for))?(?:\s*,)?(?:\s+the\s+word)?\s+[\"']?"
    r"(?P<w>[a-z][a-z'-]*)",
    re.I,
)
_SPELL_AFTER = re.compile(r"\bhow\s+(?:is\s+)?(?P<w>[a-z][a-z'-]*)\s+(?:is\s+)?spelled\b", re.I)
_DEFINE = re.compile(
    r"\b(?:meaning of|definition of|define|what does|look up|what is|what's|the word)\s+"
    r"(?:the word\s+)?[\"']?(?P<w>[a-z][a-z'-]*)[\"']?"
    r"(?=\s*(?:means?\b|in (?:the )?dictionary|$|\?))",
    re.I,
)
_TRANSLATE_TAIL = (
    r"\s*,?\s*(?:the word\s+|the phrase\s+)?(?P<p>.+?)[\"',]*\s+(?:in|into|to)\s+"
    r"(?P<lang>[a-z]+)\b"
)
# Tried in order: the specific triggers first, so "what is the equivalent of X in french"
# takes X, not "the equivalent of X".
_TRANSLATE = [
    re.compile(r"\b(?:say|translate|equivalent of|means)" + _TRANSLATE_TAIL, re.I),
    re.compile(r"\b(?:what is|what's|how is)" + _TRANSLATE_TAIL, re.I),
]
# "remind me to call mom at 5pm" -> "call mom"; stops before a time/date cue.
_TASK = re.compile(
    r"\b(?:remind(?:er)?(?: me)?(?: to| about| that)|don't let me forget to|to-do:?)\s+"
    r"(?P<t>.+?)(?=\s+(?:at|on|by|tomorrow|today|tonight|next|in|this)\b|[.!?]?$)",
    re.I,
)
_DICE = re.compile(r"\b(?:(?P<count>\d+)\s+)?(?:d(?P<d>\d+)|(?P<sides>\d+)[- ]sided)\b", re.I)
_DICE_COUNT = re.compile(r"\b(?P<count>\d+)\s+(?:dice|die)\b", re.I)

_OPS = [
    (r"\bsquare root of\b", "sqrt"),
    (r"\bsquared\b", "^ 2"),
    (r"\bcubed\b", "^ 3"),
    (r"\bplus\b|\+|\badded to\b", "+"),
    (r"\bminus\b|\bsubtract(?:ed)?\b|(?<=\d)\s*-\s*", "-"),
    (r"\btimes\b|\bmultiplied by\b|\bx\b|\*", "*"),
    (r"\bdivided by\b|\bover\b|/|÷", "/"),
    (r"%\s*of\b|\bpercent of\b", "% of"),
    (r"\bto the power of\b|\^", "^"),
]
_EXPR_TOKEN = re.compile(r"\d+(?:\.\d+)?|sqrt|% of|[-+*/^()]")
_CONVERT = re.compile(
    rf"(?:(?P<n>{_NUM})\s*(?P<unit>[a-z]+(?:\s[a-z]+)??)\s+(?:be\s+)?(?:in|to|into)\s+"
    r"(?P<to>[a-z]+)"
    rf"|how many\s+(?P<to2>[a-z]+)\s+(?:are\s+)?(?:in|to)\s+(?:(?P<n2>{_NUM})|an?|one)\s+"
    r"(?P<unit2>[a-z]+))",
    re.I,
)


_NOT_WORDS = {
    "a",
    "an",
    "the",
    "it",
    "this",
    "that",
    "my",
    "your",
    "me",
    "you",
    "word",
    "words",
    "up",
    "something",
    "anything",
    "stuff",
    "for",
    "out",
}
# What "translate X into Spanish" says when X is not the phrase yet.
_NOT_PHRASES = {
    "a phrase",
    "a word",
    "a sentence",
    "something",
    "this",
    "that",
    "it",
    "some words",
    "a few words",
    "for me",
    "something for me",
}
# A bare answer to "What time?": "6", "at 6:30", "7 in the morning", "half past 8 tonight".
_TIME_ANSWER = re.compile(
    r"^\s*(?:at\s+|around\s+|about\s+)?(?:(?P<half>half past|quarter past|quarter to)\s+)?"
    r"(?P<h>\d{1,2})(?::(?P<m>[0-5]\d))?\s*"
    r"(?P<part>in the morning|in the afternoon|in the evening|at night|tonight|"
    r"a\.?m\.?|p\.?m\.?|o'?clock)?\s*(?:please)?[.!]?\s*$",
    re.I,
)
_PART_OF_DAY = {
    "in the morning": "AM",
    "in the afternoon": "PM",
    "in the evening": "PM",
    "at night": "PM",
    "tonight": "PM",
}
_AT_HOUR = re.compile(
    r"\bat\s+(?P<h>\d{1,2})(?!\d|:|[.,]\d|\s*%)"
    r"(?!\s*(?:percent|dollars?|euros?|pounds?|bucks|cents?|miles?|km|kilometers?|meters?|"
    r"minutes?|mins?|hours?|hrs?|seconds?|degrees?|people|persons?|guests?|kg|lbs?)\b)"
    r"(?:\s+(?P<part>in the morning|in the afternoon|in the evening|at night|tonight))?\b",
    re.I,
)
# The tail of a time that says which half of the day: "6:30 in the morning".
_TIME_PART = re.compile(
    r"^\s*(?P<part>in the morning|in the afternoon|in the evening|at night|tonight)\b", re.I
)


def _clean_number(s: str) -> str:
    s = s.replace(",", "")
    return str(int(float(s))) if float(s).is_integer() else s


def _plural(n: float, unit: str) -> str:
    n_s = _clean_number(str(n))
    return f"{n_s} {unit}" + ("" if n_s == "1" else "s")


def _duration_value(m: re.Match) -> str:
    if m.group("half"):
        return {
            "half an hour": "30 minutes",
            "a half hour": "30 minutes",
            "an hour and a half": "90 minutes",
            "an hour": "1 hour",
            "a minute": "1 minute",
            "a day": "1 day",
        }[m.group("half").lower()]
    parts = []
    for n, u in ((m.group("n"), m.group("u")), (m.group("n2"), m.group("u2"))):
        if n is None:
            continue
        key = next(k for k in _UNIT_SECONDS if u.lower().startswith(k))
        name = {"sec": "second", "min": "minute", "hr": "hour"}.get(key, key)
        parts.append(_plural(float(n.replace(",", ".")), name))
    return " ".join(parts)


def duration_seconds(value: str) -> float:
    """Seconds in a normalised duration value such as "1 hour 30 minutes"."""
    total = 0.0
    for n, u in re.findall(r"(\d+(?:\.\d+)?) (second|minute|hour|day)s?", value):
        total += float(n) * _UNIT_SECONDS[u]
    return total


def _time_value(m: re.Match) -> str | None:
    if m.group("word"):
        return "12:00 PM" if m.group("word").lower() == "noon" else "12:00 AM"
    if m.group("hh") is not None:
        h, mi, ap = int(m.group("hh")), int(m.group("mm")), None
    else:
        h, mi = int(m.group("h")), int(m.group("m") or m.group("m2") or 0)
        ap = m.group("ap").lower().replace(".", "")
        if ap in _PART_OF_DAY:
            return _with_part_of_day(f"{h}:{mi:02d}", ap) if 1 <= h <= 12 else None
        ap = None if ap.startswith("o") else ap
    if h > 23 or mi > 59 or (ap and not 1 <= h <= 12):
        return None
    if ap is None:
        return f"{h}:{mi:02d}"
    return f"{h}:{mi:02d} {ap.upper()}"


def _money_value(m: re.Match) -> str:
    amount = (m.group("a") or m.group("b")).replace(",", "")
    sym = m.group("sym")
    if not sym:
        cur = m.group("cur").lower()
        sym = "€" if cur.startswith("eur") else "£" if cur.startswith(("pound", "gbp")) else "$"
    value = float(amount)
    text = f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    return f"{sym}{text}"


def _date_value(span: str, now: datetime | None) -> str | None:
    import dateparser

    base = now or datetime.now()
    phrase = re.sub(r"^(on|this|coming)\s+", "", span.strip(), flags=re.I)
    phrase = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", phrase)
    if phrase.lower() == "tonight":
        phrase = "today"
    parsed = dateparser.parse(
        phrase,
        languages=["en"],
        settings={
            "RELATIVE_BASE": base.replace(tzinfo=None),
            "PREFER_DATES_FROM": "future",
            "PREFER_DAY_OF_MONTH": "first",
            "RETURN_AS_TIMEZONE_AWARE": False,
        },
    )
    if parsed is None:
        return None
    return f"{parsed:%A}, {parsed:%B} {parsed.day}" + (
        f", {parsed.year}" if parsed.year != base.year else ""
    )


def _expression(digits: str) -> tuple[str, int, int] | None:
    """A normalised arithmetic expression ("50 + 756", "sqrt 16", "15 % of 3143") found in
    the text, with its span; None unless it has a number and an operator."""
    low = re.sub(r"(?<=\d),(?=\d{3}\b)", "", digits.lower())  # 54,788 -> 54788
    # Find the span from the first operator-or-number to the last.
    marked = low
    for pattern, op in _OPS:
        marked = re.sub(pattern, f" {op} ", marked)
    tokens = _EXPR_TOKEN.findall(marked)
    if not any(t[0].isdigit() for t in tokens) or not any(not t[0].isdigit() for t in tokens):
        return None
    # Keep the longest run of tokens that alternates sensibly; drop leading/trailing ops.
    while tokens and tokens[-1] in "+-*/^(% of":
        tokens.pop()
    while tokens and tokens[0] in "+*/^)% of":
        tokens.pop(0)
    if len(tokens) < 2:
        return None
    expr = _display_expression(" ".join(tokens))
    numbers = list(re.finditer(r"\d+(?:[.,]\d+)*", digits))
    ops = [m for p, _ in _OPS for m in re.finditer(p, low)]
    spans = numbers + ops
    return expr, min(m.start() for m in spans), max(m.end() for m in spans)


def _display_expression(expr: str) -> str:
    """ "sqrt 16" -> "the square root of 16", "6 * 7" -> "6 × 7", "15 % of 80" -> "15% of 80";
    `fulfilment.calculate` reads this form back."""
    expr = re.sub(r"sqrt\s*", "the square root of ", expr)
    expr = re.sub(r"\s*%\s*of", "% of", expr)
    return expr.replace("*", "×").replace("/", "÷")


def _conversion(digits: str) -> list[tuple[str, str, int, int]]:
    from .actions import unit_name, unit_plural, unit_quantity

    m = _CONVERT.search(digits)
    if not m:
        return []
    n = m.group("n") or m.group("n2") or "1"
    unit = unit_name(m.group("unit") or m.group("unit2"))
    to = unit_name(m.group("to") or m.group("to2"))
    if not unit or not to:
        return []
    q0, q1 = (
        (m.start("n"), m.end("unit"))
        if m.group("n")
        else (m.start("unit2") - (len(n) + 1 if m.group("n2") else 0), m.end("unit2"))
    )
    t = "to" if m.group("to") else "to2"
    return [
        ("quantity", unit_quantity(float(n.replace(",", ".")), unit), q0, q1),
        ("target_unit", unit_plural(to), m.start(t), m.end(t)),
    ]


# ---------------------------------------------------------------- the type registry


@dataclass
class Context:
    """One text being searched: the original, its digit-normalised form (with the map back
    to original offsets), the request's clock, and the digit spans already claimed."""

    text: str
    now: datetime | None = None
    taken: list[tuple[int, int]] = field(default_factory=list)

    # Lazy: only the numeric types read the normalised text, and number-word parsing is
    # the dearest step of a turn whose intent wants, say, a place.
    @cached_property
    def _normalised(self) -> tuple[str, list[int]]:
        return _digits(self.text)

    @property
    def digits(self) -> str:
        return self._normalised[0]

    @property
    def back(self) -> list[int]:
        return self._normalised[1]

    def free(self, s: int, e: int) -> bool:
        return all(e <= ts or s >= te for ts, te in self.taken)

    def claim(self, kind: str, value: str, s: int, e: int) -> Slot:
        """A slot found in the digit-normalised text: mapped back and marked taken."""
        self.taken.append((s, e))
        return Slot(kind, value, self.back[s], self.back[e])


class SlotType:
    """One kind of value. `find` returns every match in the text; `order` decides which types
    look first (a duration claims "5 minutes" before `number` sees the 5)."""

    name: str = ""
    order: int = 100
    description: str = ""

    def find(self, ctx: Context) -> list[Slot]:
        raise NotImplementedError

    def find_answer(self, ctx: Context) -> list[Slot]:
        """Values in a bare answer to the question for this type ("6" to "What time?");
        by default what `find` sees."""
        return self.find(ctx)


BUILTIN_TYPES: dict[str, SlotType] = {}


def builtin(name: str, order: int, description: str):
    def register(cls: type[SlotType]) -> type[SlotType]:
        obj = cls()
        obj.name, obj.order, obj.description = name, order, description
        BUILTIN_TYPES[name] = obj
        return cls

    return register


@builtin("duration", 10, "a length of time: '5 minutes', 'an hour and a half'")
class _Duration(SlotType):
    def find(self, ctx):
        return [
            ctx.claim(self.name, _duration_value(m), m.start(), m.end())
            for m in _DURATION.finditer(ctx.digits)
        ]


@builtin("time", 20, "a clock time: '5:45 AM', '17:30', 'noon'")
class _Time(SlotType):
    def find(self, ctx):
        out = []
        for m in _TIME.finditer(ctx.digits):
            if not ctx.free(m.start(), m.end()) or not (v := _time_value(m)):
                continue
            end = m.end()
            part = _TIME_PART.match(ctx.digits[end:])
            if part and not v.endswith("M"):
                v, end = _with_part_of_day(v, part.group("part")), end + part.end()
            out.append(ctx.claim(self.name, v, m.start(), end))
        if not out:
            # "wake me up at 6": an hour after "at", when nothing more explicit was said
            m = _AT_HOUR.search(ctx.digits)
            if m and ctx.free(m.start("h"), m.end()) and int(m.group("h")) <= 23:
                v = f"{int(m.group('h'))}:00"
                if m.group("part"):
                    v = _with_part_of_day(v, m.group("part"))
                out.append(ctx.claim(self.name, v, m.start("h"), m.end()))
        return out

    def find_answer(self, ctx):
        m = _TIME_ANSWER.match(ctx.digits)
        if not m:
            return self.find(ctx)
        h, mi = int(m.group("h")), int(m.group("m") or 0)
        half = (m.group("half") or "").lower()
        if half:
            if m.group("m"):
                return []
            mi = {"half past": 30, "quarter past": 15}.get(half, 45)
            h = (h - 1 or 12) if half == "quarter to" else h  # "quarter to 1" is 12:45
        part = (m.group("part") or "").lower().replace(".", "")
        if h > 23 or (part and part not in ("o'clock", "oclock") and not 1 <= h <= 12):
            return []
        value = f"{h}:{mi:02d}"
        if part in ("am", "pm"):
            value += f" {part.upper()}"
        elif part in _PART_OF_DAY:
            value = _with_part_of_day(value, part)
        return [ctx.claim(self.name, value, m.start("h"), m.end())]


def _with_part_of_day(value: str, part: str) -> str:
    h, mi = (int(x) for x in value.split(":"))
    if h > 12:
        return value
    half = _PART_OF_DAY[part.lower()]
    if part.lower() in ("at night", "tonight") and (h == 12 or h <= 4):
        half = "AM"  # "12 at night" is midnight, "3 at night" the small hours
    return f"{h or 12}:{mi:02d} {half}"


@builtin("money", 30, "an amount of money: '$350', '20 euros'")
class _Money(SlotType):
    def find(self, ctx):
        return [
            ctx.claim(self.name, _money_value(m), m.start(), m.end())
            for m in _MONEY.finditer(ctx.digits)
            if ctx.free(m.start(), m.end())
        ]


@builtin("date", 40, "a day, resolved against the request's clock: 'Friday, March 6'")
class _Date(SlotType):
    def find(self, ctx):
        out = []
        for m in _DATE.finditer(ctx.digits):
            if ctx.free(m.start(), m.end()) and (v := _date_value(m.group(), ctx.now)):
                s = m.start() + (3 if m.group().lower().startswith("on ") else 0)
                out.append(ctx.claim(self.name, v, s, m.end()))
        return out


@builtin("dice", 50, "dice to roll: '2d6', 'a 20-sided die'")
class _Dice(SlotType):
    def find(self, ctx):
        m, c = _DICE.search(ctx.digits), _DICE_COUNT.search(ctx.digits)
        if not (m or c):
            return []
        sides = int(m.group("d") or m.group("sides")) if m else 6
        count = int((m and m.group("count")) or (c and c.group("count")) or 1)
        s0 = min(x.start() for x in (m, c) if x)
        e0 = max(x.end() for x in (m, c) if x)
        return [ctx.claim(self.name, f"{count}d{sides}", s0, e0)]


@builtin("expression", 60, "arithmetic: '50 + 756', 'the square root of 16'")
class _Expression(SlotType):
    def find(self, ctx):
        expr = _expression(ctx.digits)
        return [ctx.claim(self.name, *expr)] if expr else []


class _ConversionPart(SlotType):
    """`quantity` ("3 feet") and `target_unit` ("inches") come from one pattern; alone, an
    amount with a known unit is a quantity, and a bare unit answers "Which unit?"."""

    def find(self, ctx):
        found = [
            ctx.claim(kind, value, s, e)
            for kind, value, s, e in _conversion(ctx.digits)
            if kind == self.name
        ]
        if found or self.name != "quantity":
            return found
        from .actions import unit_name, unit_quantity

        for m in re.finditer(rf"(?P<n>{_NUM})\s*(?P<u>[a-z]+(?:\s[a-z]+)?)", ctx.digits, re.I):
            unit = unit_name(m.group("u")) or unit_name(m.group("u").split()[0])
            if unit and ctx.free(m.start(), m.end()):
                n = m.group("n")
                # "1,500 meters": a thousands separator; "1,5 meters": a decimal comma
                thousands = re.fullmatch(r"\d{1,3}(?:,\d{3})+", n)
                n = float(n.replace(",", "") if thousands else n.replace(",", "."))
                return [ctx.claim(self.name, unit_quantity(n, unit), m.start(), m.end())]
        return []

    def find_answer(self, ctx):
        from .actions import unit_name, unit_plural

        found = self.find(ctx)
        if found or self.name != "target_unit":
            return found
        m = re.search(
            r"(?:\b(?:in|to|into)\s+)?(?P<u>[a-z]+(?:\s[a-z]+)?)\s*[.!?]?\s*$", ctx.digits, re.I
        )
        unit = m and (unit_name(m.group("u")) or unit_name(m.group("u").split()[-1]))
        return [ctx.claim(self.name, unit_plural(unit), m.start("u"), m.end("u"))] if unit else []


builtin("quantity", 70, "an amount with a unit to convert: '3 feet'")(
    type("_Quantity", (_ConversionPart,), {})
)
builtin("target_unit", 71, "the unit to convert to: 'inches'")(
    type("_TargetUnit", (_ConversionPart,), {})
)


@builtin("phrase", 80, "the phrase to translate: 'good morning' in 'say good morning in french'")
class _Phrase(SlotType):
    def find(self, ctx):
        languages = set(load_gazetteers()["languages"])
        m = next(
            (
                m
                for p in _TRANSLATE
                if (m := p.search(ctx.text)) and m.group("lang").lower() in languages
            ),
            None,
        )
        phrase = m and m.group("p").strip(" \"',")
        if not phrase or phrase.lower() in languages or phrase.lower() in _NOT_PHRASES:
            return []
        start = ctx.text.index(phrase, m.start("p"))
        return [Slot(self.name, phrase, start, start + len(phrase))]


@builtin("task", 90, "what to be reminded of: 'call mom' in 'remind me to call mom at 5pm'")
class _Task(SlotType):
    def find(self, ctx):
        m = _TASK.search(ctx.text)
        task = m.group("t").strip(" .!?,") if m else ""
        return [Slot(self.name, task, m.start("t"), m.start("t") + len(task))] if task else []


@builtin("word", 100, "the word to spell or define")
class _Word(SlotType):
    def find(self, ctx):
        m = _SPELL.search(ctx.text) or _SPELL_AFTER.search(ctx.text) or _DEFINE.search(ctx.text)
        if not m or m.group("w").lower() in _NOT_WORDS:
            return []
        return [Slot(self.name, m.group("w").lower(), m.start("w"), m.end("w"))]


class Gazetteer(SlotType):
    """Whole-word, case-insensitive matches of a table (spoken form -> value), longest entry
    first; a span is never matched twice."""

    order = 110

    def __init__(self, table: dict[str, str] | None = None, case_sensitive: bool = False):
        self.table = table or {}
        self.case_sensitive = case_sensitive

    @cached_property
    def patterns(self) -> list[tuple[re.Pattern, str, str | None]]:
        """(pattern, value, needle): `needle` is a plain substring every match contains
        (the entry itself, lower-cased unless case-sensitive), so that a text without it
        skips the regex; None where no such substring is certain (a non-ASCII entry under
        Unicode case folding)."""
        flags = 0 if self.case_sensitive else re.I
        entries = sorted(self.table.items(), key=lambda kv: -len(kv[0]))
        return [
            (
                re.compile(rf"(?<![\w/&]){re.escape(k)}(?![\w/&])", flags),
                v,
                k if self.case_sensitive else (k.lower() if k.isascii() else None),
            )
            for k, v in entries
        ]

    def display(self, value: str) -> str:
        return value

    def find(self, ctx):
        out, claimed = [], []
        # An ASCII text matches an ASCII entry case-insensitively only if its lower-cased
        # form contains the lower-cased entry: a substring test is far cheaper than a regex
        # scan, and a table has hundreds of entries.
        haystack = ctx.text if self.case_sensitive else ctx.text.lower()
        filtered = self.case_sensitive or ctx.text.isascii()
        for pattern, value, needle in self.patterns:
            if filtered and needle is not None and needle not in haystack:
                continue
            for m in pattern.finditer(ctx.text):
                if all(m.end() <= a or m.start() >= b for a, b in claimed):
                    claimed.append((m.start(), m.end()))
                    out.append(Slot(self.name, self.display(value), m.start(), m.end()))
        return out


@builtin("place", 110, "a city, country or venue (with its time zone where known)")
class _Place(Gazetteer):
    @cached_property
    def patterns(self):
        g = load_gazetteers()
        self.table = {
            **{k: k for k in g["cities"]},
            **{k: k for k in g["countries"]},
            **{k: k for k in g["venues"]},
            **g["place_aliases"],
        }
        return super().patterns

    def display(self, value):
        if value.startswith("the ") or value in ("home", "work", "downtown"):
            return value
        return _title(value)

    def find(self, ctx):
        return [s for s in super().find(ctx) if not _ordinary_word(ctx.text, s)]


# Place names that are also everyday words: "work" and "home" count after a word that
# introduces a place ("directions to work"), "US" and "LA" only in capitals.
_EVERYDAY_PLACES = {"home", "work", "target"}
_CAPITALS_ONLY = {"us", "la"}
_PLACE_CUE = re.compile(
    r"\b(?:to|from|at|near|in|into|around|by|for|me|get|go|head|back)\s+(?:my\s+)?$", re.I
)


def _ordinary_word(text: str, slot: Slot) -> bool:
    said = text[slot.start : slot.end]
    if said.lower() in _CAPITALS_ONLY:
        return not said.isupper()
    if said.lower() in _EVERYDAY_PLACES:
        return not _PLACE_CUE.search(text[: slot.start])
    return False


@builtin("language", 110, "a language: 'French'")
class _Language(Gazetteer):
    @cached_property
    def patterns(self):
        self.table = {x: x for x in load_gazetteers()["languages"]}
        return super().patterns

    def display(self, value):
        return _title(value)


@builtin("number", 200, "a number: '3', 'twenty one' -> 21")
class _Number(SlotType):
    def find(self, ctx):
        return [
            ctx.claim(self.name, _clean_number(m.group()), m.start(), m.end())
            for m in _NUMBER.finditer(ctx.digits)
            if ctx.free(m.start(), m.end())
        ]


class ListType(Gazetteer):
    """A pack's list of values with synonyms; the slot's value is the canonical value."""

    def __init__(
        self, name: str, values: dict[str, list[str] | None], case_sensitive: bool = False
    ):
        table = {}
        for value, synonyms in values.items():
            for spoken in [value, *(synonyms or ())]:
                table[spoken if case_sensitive else spoken.lower()] = value
        super().__init__(table, case_sensitive)
        self.name = name

    @cached_property
    def canonical_values(self) -> frozenset[str]:
        return frozenset(self.table.values())


class RegexType(SlotType):
    """A pack's regular expression; the value is the match (or the named/numbered group)."""

    order = 75

    def __init__(self, name: str, pattern: str, value_group: int | str = 0):
        self.name, self.pattern, self.group = name, re.compile(pattern), value_group

    def find(self, ctx):
        out = []
        for m in self.pattern.finditer(ctx.text):
            value = m.group(self.group)
            if value:
                out.append(Slot(self.name, value, m.start(), m.end()))
        return out


class FreeTextType(SlotType):
    """Found only as the answer to its own question (forms take the whole reply)."""

    order = 300

    def __init__(self, name: str):
        self.name = name

    def find(self, ctx):
        return []


def _overlap(a: Slot, b: Slot) -> bool:
    return a.start < b.end and b.start < a.end


def _covers(rule: Slot, span: Slot) -> bool:
    """The rule match reads all of the span (a partial reading would be another value:
    the span itself was normalised by the same rule, whole, by the classifier)."""
    return rule.start <= span.start and rule.end >= span.end


# What may be left around a rule's reading of a span for it to count as the whole span.
# The time rule reads a part of the day and "quarter to" / "half past" around its match.
_SPAN_FILLER = re.compile(
    r"^[\s\W]*(?:(?:at|on|in|for|by|the|about|around|morning|afternoon|evening|night"
    r"|tonight|am|pm|a|quarter|half|past|to)\b[\s\W]*)*$",
    re.I,
)


def reads_whole(text: str, slot: Slot) -> bool:
    """Whether `slot`, found in `text`, reads all of it but filler words and punctuation."""
    return _SPAN_FILLER.match(text[: slot.start] + " " + text[slot.end :]) is not None


class SlotExtractor:
    """Finds slots of the given types in user text: the built-ins plus `types` (a pack's own,
    from `parlance.pack`). `now` anchors relative dates (defaults to the wall clock)."""

    def __init__(self, types: dict[str, SlotType] | None = None):
        clash = set(types or ()) & set(BUILTIN_TYPES)
        if clash:
            raise ValueError(f"slot types {sorted(clash)} are built in; choose other names")
        self.types = {**BUILTIN_TYPES, **(types or {})}

    def extract(
        self, text: str, kinds: Iterable[str] | None = None, now: datetime | None = None
    ) -> dict[str, Slot]:
        """The first slot of each wanted type found in `text` (by position)."""
        found: dict[str, Slot] = {}
        for slot in self.extract_all(text, kinds, now):
            found.setdefault(slot.kind, slot)
        return found

    def extract_answer(self, text: str, kind: str, now: datetime | None = None) -> list[Slot]:
        """Values of `kind` in `text` read as the answer to a question for it."""
        return self.types[kind].find_answer(Context(text, now))

    def normalise(self, text: str, kind: str, now: datetime | None = None) -> str:
        """The canonical value of a span said for a slot of type `kind` (a learned span):
        a list value for a synonym, "5:45 AM" for "quarter to six in the morning", a date
        against `now`. A span the type's rule does not read whole is kept as said: the
        learned value ("Adelaide" for a list that lacks it)."""
        said = text.strip()
        kind_type = self.types.get(kind)
        if kind_type is None or not said:
            return said
        if isinstance(kind_type, Gazetteer):
            _ = kind_type.patterns  # built-in gazetteers fill their table on first use
            key = said if kind_type.case_sensitive else said.lower()
            if key in kind_type.table:
                return kind_type.display(kind_type.table[key])
            found = kind_type.find(Context(said, now))
        else:
            found = kind_type.find_answer(Context(said, now))
        # Only a reading of the whole span counts: "6:00 AM" for "quarter to six in the
        # morning", or Friday for "friday the 13th", would be a wrong value, not a rough one.
        whole = [f for f in found if reads_whole(said, f)]
        return whole[0].value if whole else said

    def rule_based(self, kind: str) -> bool:
        """Whether a type is a rule (built-in types, regular expressions) rather than a list
        of examples or free text: its reading of a span wins over a learned one."""
        return not isinstance(self.types.get(kind), ListType | FreeTextType)

    def leads(self, slot_kinds: dict[str, str], tagged: Iterable[str]) -> tuple[set, set]:
        """For slots (name -> type) of which `tagged` are left to the tagger: the list types
        whose rules go `quiet` (every slot of the type left to the tagger) and those whose
        rules lead (`rules_first`: a slot of the type not left to it), as `combine` takes
        them. Rule types are in neither: they keep their rules."""
        tagged = set(tagged)
        quiet, first = set(), set()
        for name, kind in slot_kinds.items():
            if not self.rule_based(kind):
                (first if name not in tagged else quiet).add(kind)
        return quiet - first, first

    def combine(
        self,
        rules: list[Slot],
        learned: list[Slot],
        quiet: Iterable[str] = (),
        rules_first: Iterable[str] = (),
        text: str = "",
    ) -> list[Slot]:
        """Rule matches and learned spans (the classifier's tagger) as one list, learned
        first; either kind of learned span keeps its slot name.

        - Rule types: a learned span takes the value of a rule match that contains it (the
          rule's "$350", "5:45 AM" are canonical); one no rule reads, even whole (`text`:
          the text the spans are in), is dropped.
        - List types: a learned span the list does not know as a value ("mountain" of
          "mountain bike") takes the value of a list match around it. For the types in
          `rules_first` the rules lead: a learned span counts only when no rule match of
          its type is in the text (a value the list lacks).
        - A rule match over words a kept learned span read is dropped; the others stay, for
          the slots the tagger did not find, except those of the `quiet` types."""
        said = {r.kind for r in rules}
        first = set(rules_first)
        used: set[int] = set()
        kept: list[Slot] = []
        for span in learned:
            if span.kind in first and span.kind in said:
                continue
            ruled = self.rule_based(span.kind)
            repair = _covers if ruled else self._repairs
            for i, r in enumerate(rules):
                if i not in used and r.kind == span.kind and repair(r, span):
                    used.add(i)
                    span = Slot(r.kind, r.value, r.start, r.end, span.name)
                    break
            else:
                said_text = text[span.start : span.end]
                if ruled and self.normalise(said_text, span.kind) == said_text.strip():
                    # a time, date or amount no rule reads, not even whole, is no value of
                    # that type: the tagger's guess must not hide what the rules read there
                    continue
            kept.append(span)
        quiet = set(quiet)
        return kept + [
            r
            for i, r in enumerate(rules)
            if i not in used and r.kind not in quiet and not any(_overlap(r, x) for x in kept)
        ]

    def _repairs(self, rule: Slot, span: Slot) -> bool:
        """A list match that contains a learned span the list does not know as a value
        ("mountain bike" around "mountain"; never a shorter match inside a longer span)."""
        kind = self.types.get(span.kind)
        known = isinstance(kind, ListType) and span.value in kind.canonical_values
        return not known and _covers(rule, span)

    def extract_all(
        self, text: str, kinds: Iterable[str] | None = None, now: datetime | None = None
    ) -> list[Slot]:
        wanted = set(self.types) if kinds is None else set(kinds)
        unknown = wanted - set(self.types)
        if unknown:
            raise ValueError(f"unknown slot types: {sorted(unknown)}")
        ctx = Context(text, now)
        slots: list[Slot] = []
        for t in sorted((self.types[k] for k in wanted), key=lambda t: (t.order, t.name)):
            slots.extend(t.find(ctx))
        slots.sort(key=lambda s: (s.start, s.kind))
        return slots
