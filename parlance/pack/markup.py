"""Slot annotations inside examples, in the markup Rasa made well known:

    book a [road bike](bike_type) service for [tomorrow](date)
    fix my [mtb](bike_type:mountain bike)                 # normalised value after a colon
    fix my [mtb]{"entity": "bike_type", "value": "mountain bike"}   # Rasa's JSON form

`parse` returns the plain text and the spans (character offsets into the plain text, end
exclusive); a malformed annotation is a `MarkupError` that says what is wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_ANNOTATION = re.compile(r"\[(?P<text>[^\[\]]+)\](?:\((?P<short>[^()]*)\)|(?P<json>\{[^{}]*\}))")
_SLOT = re.compile(r"^[a-z][a-z0-9_]*$")


class MarkupError(ValueError):
    pass


@dataclass(frozen=True)
class Span:
    slot: str
    text: str
    value: str  # normalised value (the text itself unless the annotation gives one)
    start: int
    end: int


@dataclass(frozen=True)
class Example:
    text: str
    spans: tuple[Span, ...] = ()


def parse(marked: str) -> Example:
    out: list[str] = []
    spans: list[Span] = []
    pos = 0
    length = 0
    for m in _ANNOTATION.finditer(marked):
        before = marked[pos : m.start()]
        out.append(before)
        length += len(before)
        text = m.group("text")
        if m.group("json") is not None:
            try:
                spec = json.loads(m.group("json"))
            except json.JSONDecodeError as e:
                raise MarkupError(f"[{text}]{m.group('json')}: not valid JSON ({e.msg})") from None
            if not isinstance(spec, dict) or not isinstance(spec.get("entity"), str):
                raise MarkupError(f'[{text}]{m.group("json")}: needs an "entity" name')
            slot, value = spec["entity"], spec.get("value", text)
            if not isinstance(value, str):
                value = str(value)
        else:
            slot, _, value = m.group("short").partition(":")
            slot, value = slot.strip(), (value.strip() or text)
        if not _SLOT.match(slot):
            raise MarkupError(f"[{text}]({slot}): slot names are lower_snake_case")
        spans.append(Span(slot, text, value, length, length + len(text)))
        out.append(text)
        length += len(text)
        pos = m.end()
    out.append(marked[pos:])
    plain = "".join(out)
    if re.search(r"\[[^\]]*\]\(", plain):
        raise MarkupError(f"{marked!r}: an annotation is not closed")
    return Example(plain, tuple(spans))


def render(example: Example) -> str:
    """The inverse of `parse`: markup for an example (the short form, `:value` when the
    value differs from the text)."""
    parts, pos = [], 0
    for s in sorted(example.spans, key=lambda s: s.start):
        parts.append(example.text[pos : s.start])
        label = s.slot if s.value == s.text else f"{s.slot}:{s.value}"
        parts.append(f"[{s.text}]({label})")
        pos = s.end
    parts.append(example.text[pos:])
    return "".join(parts)
