"""The core-intent map: which core intent each raw intent folds into, and which core intents the
generator answers. Built from a pack (`core_intents.yml`, or one core intent per intent when
the pack has none); `oos` always folds into `out_of_scope`."""

from __future__ import annotations

from dataclasses import dataclass

from parlance.pack.models import OOS, OUT_OF_SCOPE_CORE


class LabelMapError(ValueError):
    """A raw intent the map does not know (an artifact trained for another pack)."""


@dataclass(frozen=True)
class CoreIntent:
    name: str
    description: str
    generated: bool
    intents: tuple[str, ...]


@dataclass(frozen=True)
class LabelMap:
    core: dict[str, CoreIntent]
    raw_to_core: dict[str, str]
    version: int = 1

    def core_of(self, raw_intent: str) -> str:
        try:
            return self.raw_to_core[raw_intent]
        except KeyError:
            raise LabelMapError(f"raw intent {raw_intent!r} is not in the label map") from None

    def is_generated(self, core_intent: str) -> bool:
        return core_intent in self.core and self.core[core_intent].generated

    @property
    def generated(self) -> list[str]:
        return [name for name, c in self.core.items() if c.generated]

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "raw_to_core": dict(self.raw_to_core),
            "core_intents": {
                n: {
                    "description": c.description,
                    "generated": c.generated,
                    "intents": list(c.intents),
                }
                for n, c in self.core.items()
            },
        }


def build_label_map(core_intents: dict | None, intents: dict) -> LabelMap:
    """`core_intents`: name -> models.CoreIntent (None: each intent is its own core intent,
    generated when the intent says so). Consistency is checked by `parlance.pack.checks`;
    here the first mapping of a raw intent wins."""
    core: dict[str, CoreIntent] = {}
    raw_to_core: dict[str, str] = {}
    if core_intents is None:
        for name, intent in intents.items():
            core[name] = CoreIntent(name, intent.description, bool(intent.generated), (name,))
            raw_to_core[name] = name
    else:
        for name, spec in core_intents.items():
            core[name] = CoreIntent(name, spec.description, spec.generated, tuple(spec.intents))
            for raw in spec.intents:
                raw_to_core.setdefault(raw, name)
        for name, intent in intents.items():
            # Unmapped intents (a validation error) still get a core intent: their own.
            if name not in raw_to_core:
                core[name] = CoreIntent(name, intent.description, False, (name,))
                raw_to_core[name] = name
    if OOS not in raw_to_core:
        existing = core.get(OUT_OF_SCOPE_CORE)
        core[OUT_OF_SCOPE_CORE] = CoreIntent(
            OUT_OF_SCOPE_CORE,
            "Anything outside the assistant's intents.",
            False,
            (*(existing.intents if existing else ()), OOS),
        )
        raw_to_core[OOS] = OUT_OF_SCOPE_CORE
    return LabelMap(core, raw_to_core)
