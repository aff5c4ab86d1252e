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
from functools import cache, cached_property

from parlance.pack import DEFAULT_PACK, Pack, load_pack
from parlance.pack.models import ListType
from parlance.slots import load_gazetteers
from parlance.templates import PLACEHOLDER, TemplateFiller, fill

_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")


class ReplyDomain:
    """What the generator's text functions need from the pack: the placeholders it may write,
    the templates' casing, the entity types whose appearance a request must justify, and the
    template filler for the fallback."""

    def __init__(self, pack: Pack):
        self.pack = pack
        self.label_map = pack.label_map
        self.filler = TemplateFiller(pack.responses)
        generated = pack.generated_intents
        self.slot_names = sorted({s for i in generated for s in pack.intents[i].slots})
        self.fact_names = sorted({f for i in generated for f in pack.facts_of(i)})
        # One token per placeholder, added to the tokenizer so a placeholder is never split.
        self.placeholder_tokens = [f"<{n}>" for n in sorted({*self.slot_names, *self.fact_names})]
        # The pack's list types the generated intents read: a value of one in a reply that
        # the request did not bring is invented.
        read = {pack.slot_types.get(s) for s in self.slot_names}
        self.entity_types = [
            "place",
            "language",
            *(
                name
                for name, t in pack.slots_file.types.items()
                if isinstance(t, ListType) and name in read
            ),
        ]

    @cached_property
    def template_words(self) -> frozenset[str]:
        """Words the pack's own templates use: a reply that says "country" because a template
        does ("which country?") has not invented the genre "country"."""
        return frozenset(
            w.lower()
            for t in self.pack.responses.all_replies()
            for w in re.findall(r"[A-Za-z][\w'-]*", t)
        )

    @cached_property
    def truecase(self) -> dict[str, str]:
        """lowercase word -> its cased form, for words the templates capitalise mid-sentence
        ("i'm" -> "I'm", "parlance" -> "Parlance")."""
        table: dict[str, str] = {}
        for template in self.pack.responses.all_replies():
            for sentence in re.split(r"(?<=[.!?])\s+", template):
                for word in re.findall(r"[A-Za-z][\w'-]*", sentence)[1:]:
                    if word != word.lower():
                        table[word.lower()] = word
        table.update({"i": "I", "i'm": "I'm", "i'll": "I'll", "i'd": "I'd", "i've": "I've"})
        return table


@cache
def default_domain() -> ReplyDomain:
    """The bundled CLINC150 pack's (artifacts written before packs carry no copy of theirs)."""
    return ReplyDomain(load_pack(DEFAULT_PACK))


def delexicalise(text: str, slots: dict[str, str]) -> str:
    """The user text with each slot value that occurs in it (case-insensitively) replaced by
    its placeholder. Applied identically at training and serving time."""
    out = text
    for name, value in sorted(slots.items(), key=lambda kv: -len(kv[1])):
        if value:
            out = re.sub(re.escape(value), f"<{name}>", out, flags=re.I)
    return out


def source_text(intent: str, text: str, slots: dict[str, str], facts: dict[str, str]) -> str:
    return (
        f"intent: {intent} | slots: {', '.join(sorted(slots)) or 'none'} | "
        f"facts: {', '.join(sorted(facts)) or 'none'} | user: {delexicalise(text, slots)}"
    )


def clean_output(decoded: str, domain: ReplyDomain | None = None) -> str:
    """Detokenise and true-case a decoded (possibly lowercased) reply, placeholders kept."""
    s = " ".join(decoded.split())
    s = re.sub(r"\s*'\s*", "'", s)  # i ' m -> i'm
    s = re.sub(r"(?<=\w)\s*-\s*(?=\w)", "-", s)  # carry - on -> carry-on
    s = re.sub(r"\s+([.,!?;:)])", r"\1", s)
    s = re.sub(r"([(])\s+", r"\1", s)
    s = re.sub(r'"\s*(.*?)\s*"', r'"\1"', s)
    s = re.sub(r"<\s*([a-z_]+)\s*>", r"<\1>", s)
    table = (domain or default_domain()).truecase
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
        return not (
            self.unknown_placeholders or self.missing_values or self.invented or self.degenerate
        )

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
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if len(trigrams) != len(set(trigrams)):
        return True
    return any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2)) or bool(
        re.search(r"([.!?,])\1{3,}", text)
    )


@cache
def _venues() -> frozenset[str]:
    g = load_gazetteers()
    return frozenset(v.lower() for v in g["venues"])


def invented_values(
    reply: str, text: str, values: dict[str, str], domain: ReplyDomain | None = None
) -> list[str]:
    """Numbers and named entities in `reply` found in neither the user text nor the slot and
    fact values (the request is all the model may take values from)."""
    from text_to_num import alpha2digit

    source = " ".join([alpha2digit(text, "en", threshold=0), text, *values.values()]).lower()
    source_numbers = {n.replace(",", "") for n in _NUMBER.findall(source)}
    invented = [n for n in _NUMBER.findall(reply) if n.replace(",", "") not in source_numbers]
    domain = domain or default_domain()
    for slot in domain.pack.extractor.extract_all(reply, domain.entity_types):
        surface = reply[slot.start : slot.end].lower()
        if (
            slot.value.lower() in _venues()
            or surface in source
            or slot.value.lower() in source
            or surface in domain.template_words
        ):
            continue
        invented.append(reply[slot.start : slot.end])
    return invented


def check_reply(
    delexicalised: str,
    text: str,
    slots: dict[str, str],
    facts: dict[str, str],
    domain: ReplyDomain | None = None,
) -> ReplyCheck:
    values = {**slots, **facts}
    filled = fill(delexicalised, values)
    check = ReplyCheck(reply=filled)
    used = set(PLACEHOLDER.findall(delexicalised))
    check.unknown_placeholders = sorted(used - set(values))
    # A value counts as present when the reply shows it, by its own placeholder or inside
    # another value ("inches" inside the result "36 inches").
    check.missing_values = sorted(
        n for n, v in values.items() if n not in used and v.lower() not in filled.lower()
    )
    check.invented = invented_values(
        PLACEHOLDER.sub("", filled) if check.unknown_placeholders else filled, text, values, domain
    )
    check.degenerate = is_degenerate(delexicalised)
    return check
