"""Forms declared as data (`resources/forms.yaml`): loading, and filling slots from a turn.

Filling is deliberately independent of the classifier: "make that 300" or "from savings"
mid-form is recognised by the slot extractor whatever intent the classifier guesses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from services.common.files import read_yaml_mapping
from services.common.responses import PLACEHOLDER, fill
from services.common.slots import KINDS, SlotExtractor

RESOURCES = Path(__file__).parent / "resources"


class FormsError(ValueError):
    """The forms file is missing or inconsistent."""


@dataclass(frozen=True)
class SlotSpec:
    name: str
    kind: str
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
    confirm: str
    done: str
    distinct: tuple[str, ...] = ()

    def slot(self, name: str) -> SlotSpec:
        return next(s for s in self.slots if s.name == name)

    def missing(self, values: dict[str, str]) -> list[str]:
        return [s.name for s in self.slots if s.name not in values]

    def text(self, template: str, values: dict[str, str]) -> str:
        return fill(template, values)


def load_forms(path: str | Path = RESOURCES / "forms.yaml",
               raw_intents: set[str] | None = None) -> dict[str, FormSpec]:
    doc = read_yaml_mapping(path, FormsError, "forms file", "forms")
    errors, forms, owner = [], {}, {}
    for name, f in doc["forms"].items():
        try:
            slots = tuple(SlotSpec(name=s["name"], kind=s["kind"], prompt=s["prompt"],
                                   cues=tuple(s.get("cues", ())),
                                   accept_number=bool(s.get("accept_number", False)),
                                   free_text=bool(s.get("free_text", False)),
                                   min=s.get("min"), max=s.get("max")) for s in f["slots"])
            spec = FormSpec(name, tuple(f["intents"]), slots, f["confirm"], f["done"],
                            tuple(f.get("distinct", ())))
        except (KeyError, TypeError) as e:
            errors.append(f"{name}: malformed ({e!r}); needs intents, slots (name, kind, "
                          "prompt), confirm, done")
            continue
        names = {s.name for s in slots}
        for s in slots:
            if s.kind not in KINDS:
                errors.append(f"{name}.{s.name}: unknown slot kind {s.kind!r}")
        for text in (spec.confirm, spec.done):
            unknown = set(PLACEHOLDER.findall(text)) - names
            if unknown:
                errors.append(f"{name}: {text!r} uses unknown slots {sorted(unknown)}")
        for intent in spec.intents:
            if raw_intents is not None and intent not in raw_intents:
                errors.append(f"{name}: unknown raw intent {intent!r}")
            if intent in owner:
                errors.append(f"{name}: raw intent {intent!r} already starts {owner[intent]!r}")
            owner[intent] = name
        forms[name] = spec
    if errors:
        raise FormsError(f"{path}: " + "; ".join(errors))
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


def fill_slots(spec: FormSpec, text: str, values: dict[str, str], awaiting: str | None,
               extractor: SlotExtractor, now: datetime | None = None) -> FillResult:
    """Slot values for `spec` found in `text`: by cue word, else the slot being asked for,
    else the first empty slot of that kind, else (a correction) the one filled slot of that
    kind. Values that fail validation are reported, not filled."""
    kinds = {s.kind for s in spec.slots} | ({"number"} if any(
        s.accept_number for s in spec.slots) else set())
    found = extractor.extract_all(text, kinds, now)
    has_money = any(f.kind == "money" for f in found)
    result = FillResult()
    lowered = text.lower()
    for slot in found:
        kind = slot.kind
        value = slot.value
        candidates = [s for s in spec.slots if s.kind == kind]
        if kind == "number" and not candidates and not has_money:
            candidates = [s for s in spec.slots if s.accept_number]
            value = _money(value) if candidates else value
        if not candidates:
            continue
        before = lowered[:slot.start]
        cued = [s for s in candidates if any(
            re.search(rf"\b{re.escape(c)}\s+(?:my|the|a|an|our)?\s*$", before) for c in s.cues)]
        taken = set(result.updates)
        target = (cued[0] if cued else
                  next((s for s in candidates if s.name == awaiting and s.name not in taken),
                       None)
                  or next((s for s in candidates if s.name not in values
                           and s.name not in taken), None)
                  or (candidates[0] if len(candidates) == 1 else None))
        if target is None:
            continue
        problem = _validate(target, value)
        if problem:
            result.errors.append(problem)
            continue
        result.updates[target.name] = value
    if awaiting and awaiting not in result.updates:
        spec_slot = spec.slot(awaiting)
        if spec_slot.free_text and not found and text.strip():
            result.updates[awaiting] = text.strip().rstrip(".!?")
    for a, b in zip(spec.distinct[::2], spec.distinct[1::2], strict=False):
        merged = {**values, **result.updates}
        if a in merged and b in merged and merged[a].lower() == merged[b].lower():
            result.errors.append(f"{a.replace('_', ' ')} and {b.replace('_', ' ')} must differ")
            for name in (a, b):
                result.updates.pop(name, None)
    return result


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
