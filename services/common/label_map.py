"""The core-intent label map: loading and validation.

`resources/label_map.yaml` folds the 150 raw CLINC150 intents and `oos` into 20 core intents,
10 of them answered by the generator. Training (response data) and the gateway both load it
through `load_label_map`, which refuses a map with a missing, duplicated or unknown raw
intent, a non-boolean `generated`, or the wrong number of core or generated intents, with a
message that names the offending entries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from services.common.files import read_yaml_mapping

RESOURCES = Path(__file__).parent / "resources"
DEFAULT_PATH = RESOURCES / "label_map.yaml"
N_CORE = 20
N_GENERATED = 10


class LabelMapError(ValueError):
    """The label map file is missing or inconsistent."""


@dataclass(frozen=True)
class CoreIntent:
    name: str
    description: str
    generated: bool
    intents: tuple[str, ...]


@dataclass(frozen=True)
class LabelMap:
    version: int
    core: dict[str, CoreIntent]
    raw_to_core: dict[str, str]

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
        return {"version": self.version, "raw_to_core": dict(self.raw_to_core),
                "core_intents": {n: {"description": c.description, "generated": c.generated,
                                     "intents": list(c.intents)} for n, c in self.core.items()}}


def clinc_raw_intents() -> set[str]:
    """The 150 CLINC150 intents (from the packaged domains.json) plus `oos`."""
    domains = json.loads((RESOURCES / "clinc150_domains.json").read_text())
    return {i for intents in domains.values() for i in intents} | {"oos"}


def load_label_map(path: str | Path = DEFAULT_PATH, raw_intents: set[str] | None = None,
                   n_core: int = N_CORE, n_generated: int = N_GENERATED) -> LabelMap:
    path = Path(path)
    doc = read_yaml_mapping(path, LabelMapError, "label map", "core_intents")
    if not isinstance(doc.get("version"), int):
        raise LabelMapError(f"{path}: 'version' must be an integer")
    expected = clinc_raw_intents() if raw_intents is None else set(raw_intents)

    core: dict[str, CoreIntent] = {}
    raw_to_core: dict[str, str] = {}
    duplicated, problems = [], []
    for name, spec in doc["core_intents"].items():
        if not isinstance(spec, dict):
            problems.append(f"{name}: expected a mapping")
            continue
        intents = spec.get("intents")
        generated = spec.get("generated")
        description = spec.get("description")
        if not isinstance(intents, list) or not intents:
            problems.append(f"{name}: 'intents' must be a non-empty list")
            continue
        if not all(isinstance(i, str) for i in intents):
            # e.g. an unquoted yes/no, which YAML 1.1 reads as a boolean
            problems.append(f"{name}: every raw intent must be a string (quote yes/no): "
                            f"{[i for i in intents if not isinstance(i, str)]}")
            continue
        if not isinstance(generated, bool):
            problems.append(f"{name}: 'generated' must be true or false")
        if not isinstance(description, str) or not description.strip():
            problems.append(f"{name}: needs a one-line 'description'")
        for raw in intents:
            if raw in raw_to_core:
                duplicated.append(f"{raw} ({raw_to_core[raw]} and {name})")
            raw_to_core[raw] = name
        core[name] = CoreIntent(name, str(description or ""), bool(generated), tuple(intents))

    unknown = sorted(set(raw_to_core) - expected)
    missing = sorted(expected - set(raw_to_core))
    if duplicated:
        problems.append(f"raw intents mapped twice: {', '.join(duplicated)}")
    if unknown:
        problems.append(f"unknown raw intents: {', '.join(unknown)}")
    if missing:
        problems.append(f"raw intents not mapped: {', '.join(missing)}")
    if len(core) != n_core:
        problems.append(f"{len(core)} core intents, expected {n_core}")
    n_gen = sum(c.generated for c in core.values())
    if n_gen != n_generated:
        problems.append(f"{n_gen} core intents marked generated, expected {n_generated}")
    if problems:
        raise LabelMapError(f"{path}: " + "; ".join(problems))
    return LabelMap(doc["version"], core, raw_to_core)
