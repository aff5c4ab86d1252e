"""Reply templates: placeholders, filling, and the rule-based template filler (the generator's
baseline, and the reply when the generator is down or its reply fails a check).

Templates are delexicalised: `<slot>` and `<fact>` placeholders, filled from the request's
slots and facts. Which templates an intent has, and what they may use, comes from the pack
(`responses.yml`, `intents.yml`); format and rules: docs/assistant-packs.md.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

PLACEHOLDER = re.compile(r"<([a-z_][a-z0-9_]*)>")


def placeholders(template: str) -> frozenset[str]:
    return frozenset(PLACEHOLDER.findall(template))


def fill(template: str, values: dict[str, str]) -> str:
    """Replace every `<name>` with values[name]; unknown placeholders are left as they are
    (the generator's checks reject a reply that still has one)."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def best_covered(templates: list[str] | tuple[str, ...], available) -> list[str]:
    """The templates whose placeholders are all available, keeping those that use the most
    of them (a reply that names the city beats one that does not)."""
    usable = [t for t in templates if placeholders(t) <= available]
    if not usable:
        return []
    best = max(len(placeholders(t)) for t in usable)
    return [t for t in usable if len(placeholders(t)) == best]


@dataclass(frozen=True)
class RawIntentReplies:
    core_intent: str
    raw_intent: str
    slots: tuple[str, ...]  # slots the gateway reads for this raw intent
    facts: tuple[str, ...]  # facts its action computes
    replies: tuple[str, ...]

    def valid_replies(self, available: set[str] | frozenset[str]) -> list[str]:
        return best_covered(self.replies, available)


@dataclass(frozen=True)
class Responses:
    """Replies of the raw intents that have their own (generated core intents' intents are
    the generator's training targets); `by_core` holds the per-core-intent replies."""

    by_raw: dict[str, RawIntentReplies]
    by_core: dict[str, tuple[str, ...]]

    def core_intents(self) -> list[str]:
        return sorted({r.core_intent for r in self.by_raw.values()})

    def raw_intents(self, core_intent: str) -> list[RawIntentReplies]:
        return [r for r in self.by_raw.values() if r.core_intent == core_intent]

    def all_replies(self) -> list[str]:
        return [t for r in self.by_raw.values() for t in r.replies]


def _pick(candidates: list[str], text: str) -> str | None:
    # A stable hash of the text: the same input always gets the same reply (tests and
    # comparisons stay deterministic).
    return candidates[zlib.crc32(text.encode("utf-8")) % len(candidates)] if candidates else None


class TemplateFiller:
    """Rule-based replies from templates.

    `reply_for` (what the gateway and the generator's fallback use) knows the raw intent and
    answers from its own templates, else its core intent's. `reply` is the evaluation's
    baseline: it knows only the core intent, like the generator's input."""

    def __init__(self, responses: Responses):
        self.responses = responses

    def candidates(self, core_intent: str, available: set[str]) -> list[str]:
        pool = [t for r in self.responses.raw_intents(core_intent) for t in r.replies]
        return best_covered(pool, available)

    def delexicalised(self, core_intent: str, text: str, available: set[str]) -> str | None:
        return _pick(self.candidates(core_intent, available), text)

    def reply(
        self, core_intent: str, text: str, slots: dict[str, str], facts: dict[str, str]
    ) -> str | None:
        values = {**slots, **facts}
        template = self.delexicalised(core_intent, text, set(values))
        return None if template is None else fill(template, values)

    def reply_for(
        self,
        raw_intent: str,
        core_intent: str,
        text: str,
        slots: dict[str, str],
        facts: dict[str, str],
    ) -> str | None:
        values = {**slots, **facts}
        entry = self.responses.by_raw.get(raw_intent)
        pool = entry.replies if entry else self.responses.by_core.get(core_intent, ())
        template = _pick(best_covered(pool, set(values)), text)
        return None if template is None else fill(template, values)
