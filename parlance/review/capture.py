"""Which turns are worth a reviewer's look: a registry of small rules, each naming one
reason. A turn is captured when any enabled rule holds; its reasons go with it, so the
inbox can be filtered by them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TurnFacts:
    """One answered turn as the capture rules see it."""

    text: str
    raw_intent: str
    core_intent: str
    confidence: float
    oos: bool
    reply_source: str  # the chat response's `source`
    # form events of the turn: form_answer (a form read it), corrected, cancelled
    events: frozenset[str] = frozenset()
    second_intent: str | None = None
    margin: float | None = None  # top score minus the runner-up's


@dataclass(frozen=True)
class CaptureRules:
    low_confidence: float = 0.5  # below it an in-scope prediction is doubtful
    margin: float = 0.1  # top two intents closer than this: the classifier hesitated
    enabled: frozenset[str] = field(default_factory=lambda: frozenset(RULES))

    def reasons(self, turn: TurnFacts) -> tuple[str, ...]:
        return tuple(
            name for name, rule in RULES.items() if name in self.enabled and rule(turn, self)
        )


def _classified(turn: TurnFacts) -> bool:
    """The prediction mattered: not a text a form read as its answer ("$300", "from
    checking"), which the classifier need not know as an intent."""
    return "form_answer" not in turn.events


RULES: dict[str, Callable[[TurnFacts, CaptureRules], bool]] = {
    "out_of_scope": lambda t, r: t.oos and _classified(t),
    "low_confidence": lambda t, r: not t.oos and t.confidence < r.low_confidence and _classified(t),
    "small_margin": lambda t, r: (
        not t.oos and t.margin is not None and t.margin < r.margin and _classified(t)
    ),
    "fallback": lambda t, r: t.reply_source == "fallback",
    "form_correction": lambda t, r: "corrected" in t.events,
    "form_cancelled": lambda t, r: "cancelled" in t.events,
}


def parse_reasons(spec: str) -> frozenset[str]:
    """A comma-separated list of rule names ("all" or empty: every rule); unknown names are
    refused with the known ones."""
    names = {n.strip() for n in spec.split(",") if n.strip()}
    if not names or names == {"all"}:
        return frozenset(RULES)
    unknown = sorted(names - set(RULES))
    if unknown:
        raise ValueError(f"unknown capture reasons {unknown}; known: {', '.join(RULES)}")
    return frozenset(names)
