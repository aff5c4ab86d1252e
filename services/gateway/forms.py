"""Forms of the pack (`forms.yml`) as the dialogue uses them, and filling slots from a turn.

Filling is deliberately independent of the classifier: "make that 300" or "from savings"
mid-form is recognised by the slot extractor whatever intent the classifier guesses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from parlance.pack import Pack
from parlance.pack.models import FormSlot
from parlance.slots import Slot, SlotExtractor
from parlance.templates import fill


@dataclass(frozen=True)
class SlotSpec:
    name: str
    kind: str  # the slot's type
    prompt: str
    cues: tuple[str, ...] = ()
    accept_number: bool = False
    free_text: bool = False
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class FormSpec:
    name: str
    intents: tuple[str, ...]
    slots: tuple[SlotSpec, ...]
    confirm: str | None
    done: str
    distinct: tuple[tuple[str, str], ...] = ()
    # A one-slot form (an intent's required slots): once filled, that intent is answered
    # with them instead of a `done` text.
    answer_intent: str | None = None
    action: str | None = None  # the webhook action its submission calls

    def slot(self, name: str) -> SlotSpec:
        return next(s for s in self.slots if s.name == name)

    def missing(self, values: dict[str, str]) -> list[str]:
        return [s.name for s in self.slots if s.name not in values]

    def text(self, template: str, values: dict[str, str]) -> str:
        return fill(template, values)


def forms_of(pack: Pack) -> dict[str, FormSpec]:
    """The pack's forms (already checked by the pack loader): those of forms.yml, and one
    per intent with required slots, named after the intent."""
    free_text_types = {t for t, spec in pack.slots_file.types.items() if spec.kind == "free_text"}

    def slot_spec(s: FormSlot) -> SlotSpec:
        return SlotSpec(
            name=s.slot,
            kind=pack.slot_types[s.slot],
            prompt=s.prompt,
            cues=tuple(s.cues),
            accept_number=s.accept_number,
            free_text=s.free_text or pack.slot_types[s.slot] in free_text_types,
            min=s.min,
            max=s.max,
        )

    forms = {}
    for name, f in pack.forms_file.forms.items():
        forms[name] = FormSpec(
            name,
            tuple(f.intents),
            tuple(slot_spec(s) for s in f.slots),
            f.confirm,
            f.done,
            tuple(tuple(p) for p in f.distinct),
            action=f.action,
        )
    for name, intent in pack.intents.items():
        if intent.requires:
            slots = tuple(slot_spec(s) for s in intent.requires)
            forms[name] = FormSpec(name, (name,), slots, None, "", answer_intent=name)
    return forms


def _number(value: str) -> float | None:
    m = re.search(r"\d+(?:\.\d+)?", value.replace(",", ""))
    return float(m.group()) if m else None


def _money(number: str) -> str:
    x = float(number.replace(",", ""))
    return f"${x:,.0f}" if x.is_integer() else f"${x:,.2f}"


@dataclass
class FillResult:
    updates: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def fill_slots(
    spec: FormSpec,
    text: str,
    values: dict[str, str],
    awaiting: str | None,
    extractor: SlotExtractor,
    now: datetime | None = None,
    learned: Sequence[Slot] = (),
    tagged: frozenset[str] = frozenset(),
) -> FillResult:
    """Slot values for `spec` found in `text`. A span the classifier's tagger found
    (`learned`, naming its slot) fills that slot; a rule match fills the slot named by a cue
    word, else the slot being asked for, else the first empty slot of that kind, else (a
    correction) the one filled slot of that kind (`SlotExtractor.combine`: rules keep the
    last word on rule types). A list or free-text slot the tagger knows (`tagged`) is left
    to it, except for the answer to its own question: list matches elsewhere in the text
    cost more precision than they add recall (docs/learned-slots.md). Values that fail
    validation are reported, not filled. A bare answer to the question just asked ("7" to
    "What time?") is that slot's value and nothing else's."""
    answer = _answer_to(spec, awaiting, text, extractor, now)
    if answer and _ANSWER_FILLER.match(text[: answer[0].start] + text[answer[0].end :]):
        # nothing but the answer was said: it fills the slot asked for, and no other
        problem = _validate(spec.slot(awaiting), answer[0].value)
        return FillResult(errors=[problem]) if problem else FillResult({awaiting: answer[0].value})
    names = {s.name for s in spec.slots}
    ours = [x for x in learned if x.name in names]
    kinds = {s.kind for s in spec.slots if s.kind in extractor.types} | (
        {"number"} if any(s.accept_number for s in spec.slots) else set()
    )
    quiet, first = extractor.leads({s.name: s.kind for s in spec.slots}, tagged)
    rules = extractor.extract_all(text, kinds, now)
    found = extractor.combine(rules, ours, quiet, first, text)
    has_money = any(f.kind == "money" for f in found)
    result = FillResult()
    refused: set[str] = set()
    lowered = text.lower()
    for slot in found:
        kind = slot.kind
        value = slot.value
        if slot.name is not None:  # the tagger named the slot
            name = slot.name
            if (
                awaiting
                and name != awaiting
                and awaiting not in values
                and spec.slot(awaiting).kind == kind
                and _ANSWER_FILLER.match(text[: slot.start] + text[slot.end :])
            ):
                # the whole reply is a value of the awaited slot's type: an answer to the
                # question just asked, whichever slot of that type the tagger guessed
                name = awaiting
            if name not in result.updates and name not in refused:
                target = spec.slot(name)
                problem = _validate(target, value)
                if problem:
                    result.errors.append(problem)
                    refused.add(target.name)
                else:
                    result.updates[target.name] = value
            continue
        candidates = [s for s in spec.slots if s.kind == kind]
        if kind == "number" and not candidates and not has_money:
            candidates = [s for s in spec.slots if s.accept_number]
            value = _money(value) if candidates else value
        if not candidates:
            continue
        before = lowered[: slot.start]
        cued = [
            s
            for s in candidates
            if any(
                re.search(rf"\b{re.escape(c)}\s+(?:my|the|a|an|our)?\s*$", before) for c in s.cues
            )
        ]
        taken = set(result.updates)
        target = (
            cued[0]
            if cued
            else next((s for s in candidates if s.name == awaiting and s.name not in taken), None)
            or next((s for s in candidates if s.name not in values and s.name not in taken), None)
            # a correction: the one slot of that kind, unless this turn already filled it
            # ("from dollars to euros" for one currency slot keeps the first)
            or (candidates[0] if len(candidates) == 1 and candidates[0].name not in taken else None)
        )
        if target is None:
            continue
        problem = _validate(target, value)
        if problem:
            result.errors.append(problem)
            refused.add(target.name)
            continue
        result.updates[target.name] = value
    if awaiting and awaiting not in result.updates and awaiting not in refused:
        spec_slot = spec.slot(awaiting)
        if answer:
            # A bare answer to the question just asked ("6" to "What time?").
            problem = _validate(spec_slot, answer[0].value)
            if problem:
                result.errors.append(problem)
            else:
                result.updates[awaiting] = answer[0].value
        elif spec_slot.free_text and not found and text.strip():
            result.updates[awaiting] = text.strip().rstrip(".!?")
    for a, b in spec.distinct:
        merged = {**values, **result.updates}
        if a in merged and b in merged and merged[a].lower() == merged[b].lower():
            result.errors.append(f"{a.replace('_', ' ')} and {b.replace('_', ' ')} must differ")
            for name in (a, b):
                result.updates.pop(name, None)
    return result


# What may surround a bare answer: "at 7 please", "7.", "um, 7".
_ANSWER_FILLER = re.compile(
    r"^[\s\W]*(?:(?:um|uh|at|about|around|maybe|say|please|ok|okay)\b[\s\W]*)*$", re.I
)


def _answer_to(
    spec: FormSpec,
    awaiting: str | None,
    text: str,
    extractor: SlotExtractor,
    now: datetime | None,
) -> list:
    """Values in `text` read as the answer to the question for the awaited slot (none for
    a free-text slot: there the whole text is the answer)."""
    if not awaiting:
        return []
    slot = spec.slot(awaiting)
    if slot.free_text or slot.kind not in extractor.types:
        return []
    return extractor.extract_answer(text, slot.kind, now)


def _validate(spec: SlotSpec, value: str) -> str | None:
    if spec.min is None and spec.max is None:
        return None
    x = _number(value)
    if x is None:
        return f"{spec.name.replace('_', ' ')} must be a number"
    if spec.min is not None and x < spec.min:
        return f"{spec.name.replace('_', ' ')} must be at least {spec.min:g}"
    if spec.max is not None and x > spec.max:
        return f"{spec.name.replace('_', ' ')} can be at most {spec.max:g}"
    return None
