"""Reply templates for the generated core intents: loading, validation, filling, and the
rule-based template filler (the baseline the generator is measured against, and the
generator's and gateway's fallback).

Templates are delexicalised: `<slot>` and `<fact>` placeholders, filled after generation
from the request's slots and facts. Format and rules: docs/response_data.md.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .files import read_yaml_mapping
from .fulfilment import FACT_NAMES
from .label_map import LabelMap, load_label_map
from .slots import KINDS

RESOURCES = Path(__file__).parent / "resources"
DEFAULT_PATH = RESOURCES / "responses.yaml"
MIN_REPLIES_PER_CORE = 8
PLACEHOLDER = re.compile(r"<([a-z_]+)>")


class ResponsesError(ValueError):
    """The response templates file is missing or inconsistent."""


def placeholders(template: str) -> frozenset[str]:
    return frozenset(PLACEHOLDER.findall(template))


def fill(template: str, values: dict[str, str]) -> str:
    """Replace every `<name>` with values[name]; unknown placeholders are left as they are
    (the generator's checks reject a reply that still has one)."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


@dataclass(frozen=True)
class RawIntentReplies:
    core_intent: str
    raw_intent: str
    slots: tuple[str, ...]  # slot kinds the gateway extracts for this raw intent
    facts: tuple[str, ...]  # facts local fulfilment computes for it
    replies: tuple[str, ...]

    def valid_replies(self, available: set[str] | frozenset[str]) -> list[str]:
        """The replies that use exactly the available slots and facts of this raw intent;
        when no reply covers that combination, those that cover the most of it."""
        usable = [r for r in self.replies if placeholders(r) <= available]
        if not usable:
            return []
        best = max(len(placeholders(r)) for r in usable)
        return [r for r in usable if len(placeholders(r)) == best]


@dataclass(frozen=True)
class Responses:
    version: int
    by_raw: dict[str, RawIntentReplies]

    def core_intents(self) -> list[str]:
        return sorted({r.core_intent for r in self.by_raw.values()})

    def raw_intents(self, core_intent: str) -> list[RawIntentReplies]:
        return [r for r in self.by_raw.values() if r.core_intent == core_intent]

    def slot_kinds(self, raw_intent: str) -> tuple[str, ...]:
        entry = self.by_raw.get(raw_intent)
        return entry.slots if entry else ()

    def all_replies(self) -> list[str]:
        return [t for r in self.by_raw.values() for t in r.replies]


def load_responses(path: str | Path = DEFAULT_PATH,
                   label_map: LabelMap | None = None) -> Responses:
    path = Path(path)
    doc = read_yaml_mapping(path, ResponsesError, "response templates", "core_intents")
    label_map = label_map or load_label_map()
    errors: list[str] = []
    by_raw: dict[str, RawIntentReplies] = {}
    generated = set(label_map.generated)
    for core, raws in doc["core_intents"].items():
        if core not in generated:
            errors.append(f"{core!r} is not a generated core intent of the label map")
            continue
        if not isinstance(raws, dict):
            errors.append(f"{core}: expected a mapping of raw intents")
            continue
        n_replies = 0
        for raw, entry in raws.items():
            if label_map.raw_to_core.get(raw) != core:
                errors.append(f"{core}.{raw}: not a raw intent of {core!r} in the label map")
                continue
            if not isinstance(entry, dict) or not entry.get("replies"):
                errors.append(f"{core}.{raw}: needs 'slots' and a non-empty 'replies' list")
                continue
            slots = tuple(entry.get("slots") or ())
            bad_kinds = [s for s in slots if s not in KINDS]
            if bad_kinds:
                errors.append(f"{core}.{raw}: unknown slot kinds {bad_kinds}")
            facts = tuple(FACT_NAMES.get(raw, ()))
            allowed = set(slots) | set(facts)
            for reply in entry["replies"]:
                if not isinstance(reply, str) or not reply.strip():
                    errors.append(f"{core}.{raw}: empty or non-string reply {reply!r}")
                    continue
                unknown = placeholders(reply) - allowed
                if unknown:
                    errors.append(f"{core}.{raw}: {reply!r} uses {sorted(unknown)}, "
                                  f"not among its slots/facts {sorted(allowed)}")
                if re.search(r"\d", PLACEHOLDER.sub("", reply)):
                    errors.append(f"{core}.{raw}: {reply!r} has a digit of its own; numbers "
                                  "must come from slots or facts")
            by_raw[raw] = RawIntentReplies(core, raw, slots, facts,
                                           tuple(r for r in entry["replies"]
                                                 if isinstance(r, str)))
            n_replies += len(entry["replies"])
        if n_replies < MIN_REPLIES_PER_CORE:
            errors.append(f"{core}: {n_replies} replies, at least {MIN_REPLIES_PER_CORE} needed")
    for core in sorted(generated - set(doc["core_intents"])):
        errors.append(f"generated core intent {core!r} has no replies")
    for core in generated & set(doc["core_intents"]):
        missing = set(label_map.core[core].intents) - set(by_raw)
        if missing:
            errors.append(f"{core}: no replies for raw intents {sorted(missing)}")
    if errors:
        raise ResponsesError(f"{path}: " + "; ".join(errors))
    return Responses(version=int(doc.get("version", 1)), by_raw=by_raw)


@cache
def default_responses() -> Responses:
    return load_responses()


class TemplateFiller:
    """The plain rule-based baseline: knows the core intent, slots and facts (not the raw
    intent, not the wording), picks one template whose placeholders are covered, fills it.

    The choice among equally good templates is a stable hash of the text, so a given input
    always gets the same reply (tests and comparisons stay deterministic)."""

    def __init__(self, responses: Responses | None = None):
        self.responses = responses or default_responses()

    def candidates(self, core_intent: str, available: set[str]) -> list[str]:
        pool = [t for r in self.responses.raw_intents(core_intent) for t in r.replies]
        usable = [t for t in pool if placeholders(t) <= available]
        if not usable:
            return []
        best = max(len(placeholders(t)) for t in usable)
        return [t for t in usable if len(placeholders(t)) == best]

    def delexicalised(self, core_intent: str, text: str, available: set[str]) -> str | None:
        cands = self.candidates(core_intent, available)
        if not cands:
            return None
        return cands[zlib.crc32(text.encode("utf-8")) % len(cands)]

    def reply(self, core_intent: str, text: str, slots: dict[str, str],
              facts: dict[str, str]) -> str | None:
        values = {**slots, **facts}
        template = self.delexicalised(core_intent, text, set(values))
        return None if template is None else fill(template, values)
