"""The generator's text in and out, shared by training, evaluation and the service.

- `source_text`: the one serialisation of a request (core intent, slot names, fact names,
  delexicalised user text) that the model reads. Format: docs/response_data.md.
- `clean_output`: detokenises what the model wrote (the uncased MiniLM tokenizer yields
  "i ' m") and restores case from the templates' own vocabulary.
- `check_reply`: what makes a reply unusable (unknown or unfilled placeholders, a value the
  request had but the reply lacks, invented numbers or entities, loops, empty). The service
  falls back to a template when it finds any; the evaluation counts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from services.common.fulfilment import FACT_NAMES
from services.common.responses import PLACEHOLDER, default_responses, fill
from services.common.slots import KINDS, SlotExtractor, load_gazetteers

FACTS = sorted({f for names in FACT_NAMES.values() for f in names})
# One token per placeholder, added to the tokenizer so a placeholder is never split.
PLACEHOLDER_TOKENS = [f"<{name}>" for name in sorted(set(KINDS) | set(FACTS))]
# Entity kinds whose appearance in a reply must be justified by the request.
_ENTITY_KINDS = ("place", "language", "dish", "artist", "person")
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")


def delexicalise(text: str, slots: dict[str, str]) -> str:
    """The user text with each slot value that occurs in it (case-insensitively) replaced by
    its placeholder. Applied identically at training and serving time."""
    out = text
    for name, value in sorted(slots.items(), key=lambda kv: -len(kv[1])):
        if value:
            out = re.sub(re.escape(value), f"<{name}>", out, flags=re.I)
    return out


def source_text(intent: str, text: str, slots: dict[str, str], facts: dict[str, str]) -> str:
    return (f"intent: {intent} | slots: {', '.join(sorted(slots)) or 'none'} | "
            f"facts: {', '.join(sorted(facts)) or 'none'} | user: {delexicalise(text, slots)}")


@cache
def _truecase_map() -> dict[str, str]:
    """lowercase word -> its cased form, for words the templates capitalise mid-sentence
    ("i'm" -> "I'm", "parlance" -> "Parlance")."""
    table: dict[str, str] = {}
    for template in default_responses().all_replies():
        for sentence in re.split(r"(?<=[.!?])\s+", template):
            for word in re.findall(r"[A-Za-z][\w'-]*", sentence)[1:]:
                if word != word.lower():
                    table[word.lower()] = word
    table.update({"i": "I", "i'm": "I'm", "i'll": "I'll", "i'd": "I'd", "i've": "I've"})
    return table


def clean_output(decoded: str) -> str:
    """Detokenise and true-case a decoded (possibly lowercased) reply, placeholders kept."""
    s = " ".join(decoded.split())
    s = re.sub(r"\s*'\s*", "'", s)  # i ' m -> i'm
    s = re.sub(r"(?<=\w)\s*-\s*(?=\w)", "-", s)  # carry - on -> carry-on
    s = re.sub(r"\s+([.,!?;:)])", r"\1", s)
    s = re.sub(r"([(])\s+", r"\1", s)
    s = re.sub(r'"\s*(.*?)\s*"', r'"\1"', s)
    s = re.sub(r"<\s*([a-z_]+)\s*>", r"<\1>", s)
    table = _truecase_map()
    s = re.sub(r"[A-Za-z][\w'-]*", lambda m: table.get(m.group().lower(), m.group()), s)
    # Capitalise each sentence start (not a placeholder: its value brings its own case).
    return re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), s)


@dataclass
class ReplyCheck:
    reply: str  # filled
    unknown_placeholders: list[str] = field(default_factory=list)
    missing_values: list[str] = field(default_factory=list)
    invented: list[str] = field(default_factory=list)
    degenerate: bool = False

    @property
    def ok(self) -> bool:
        return not (self.unknown_placeholders or self.missing_values or self.invented
                    or self.degenerate)

    def problems(self) -> list[str]:
        out = []
        if self.unknown_placeholders:
            out.append(f"unfilled placeholders {self.unknown_placeholders}")
        if self.missing_values:
            out.append(f"missing values {self.missing_values}")
        if self.invented:
            out.append(f"invented {self.invented}")
        if self.degenerate:
            out.append("degenerate")
        return out


def is_degenerate(text: str) -> bool:
    words = re.findall(r"[\w<>']+", text.lower())
    if not words:
        return True
    trigrams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    if len(trigrams) != len(set(trigrams)):
        return True
    return (any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2))
            or bool(re.search(r"([.!?,])\1{3,}", text)))


@cache
def _extractor() -> SlotExtractor:
    return SlotExtractor()


@cache
def _venues() -> frozenset[str]:
    g = load_gazetteers()
    return frozenset(v.lower() for v in g["venues"])


def invented_values(reply: str, text: str, values: dict[str, str]) -> list[str]:
    """Numbers and named entities in `reply` found in neither the user text nor the slot and
    fact values (the request is all the model may take values from)."""
    from text_to_num import alpha2digit

    source = " ".join([alpha2digit(text, "en", threshold=0), text, *values.values()]).lower()
    source_numbers = {n.replace(",", "") for n in _NUMBER.findall(source)}
    invented = [n for n in _NUMBER.findall(reply) if n.replace(",", "") not in source_numbers]
    for slot in _extractor().extract_all(reply, _ENTITY_KINDS):
        surface = reply[slot.start:slot.end].lower()
        if slot.value.lower() in _venues() or surface in source or slot.value.lower() in source:
            continue
        invented.append(reply[slot.start:slot.end])
    return invented


def check_reply(delexicalised: str, text: str, slots: dict[str, str],
                facts: dict[str, str]) -> ReplyCheck:
    values = {**slots, **facts}
    filled = fill(delexicalised, values)
    check = ReplyCheck(reply=filled)
    used = set(PLACEHOLDER.findall(delexicalised))
    check.unknown_placeholders = sorted(used - set(values))
    # A value counts as present when the reply shows it, by its own placeholder or inside
    # another value ("inches" inside the result "36 inches").
    check.missing_values = sorted(n for n, v in values.items()
                                  if n not in used and v.lower() not in filled.lower())
    check.invented = invented_values(PLACEHOLDER.sub("", filled) if check.unknown_placeholders
                                     else filled, text, values)
    check.degenerate = is_degenerate(delexicalised)
    return check
