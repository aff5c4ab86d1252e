"""A Rasa 3.x project (domain.yml, data/*.yml, tests/*.yml) into an assistant pack.

What maps, and how:

* NLU: `- intent:` entries become intents (names in lower_snake_case); `[text](entity)`,
  `[text](entity:value)` and `[text]{"entity": ..., "value": ...}` annotations become slot
  spans. Entity roles and groups have no counterpart and are dropped (counted in a note).
  Examples of `out_of_scope` (or `nlu_fallback`, `oos`) become the pack's out-of-scope
  examples. Intents named affirm / deny / stop / cancel become dialogue.yml meta intents.
* Entities become slots of the same name. Their type: a `list` of values when Rasa knows
  values for them (lookup tables, synonyms, a categorical slot's values, plus the values
  annotated in the examples); else a `regex` when a regex of the entity's name exists; else
  the built-in `number` for an entity that fills a float slot; else a built-in type of the
  same name (Duckling-style `number`, `duration`, ...); else `free_text`.
* Domain slots filled `from_entity` take their entity's type; `from_text` slots are free
  text; slots filled otherwise (from_intent, custom) exist only when a form needs them.
* Rules and stories of the simple shapes: an intent answered by `utter_*` responses (the
  intent's replies), an intent that activates a form (the form's intents), a form
  submission followed by `utter_*` (the form's done text). Prompts come from
  `utter_ask_<form>_<slot>` / `utter_ask_<slot>`. Everything else (custom actions,
  checkpoints, conditions, OR steps, multi-turn stories) is listed in the notes.
* `tests/*.yml` test stories (`- user: ...` + `intent:`) become test examples.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from parlance.importers import (
    ExampleSet,
    ImportReport,
    Names,
    PackImportError,
    assistant_name,
    check_output,
    intents_doc,
    listing,
    load_yaml,
    make_example,
    snake,
    write_and_check,
)
from parlance.pack.models import OOS
from parlance.slots import BUILTIN_TYPES
from parlance.templates import placeholders

# Rasa's annotation syntax (rasa.shared.nlu.training_data.entities_parser.ENTITY_REGEX).
_ENTITY = re.compile(
    r"\[(?P<text>[^\]]+?)\]"
    r"(?:\((?P<short>[^)]*)\)|(?P<dict>\{[^}]*\})|\[(?P<list>\s*\{.*?\}\s*)\])"
)
_RASA_SLOT = re.compile(r"\{([^{}\s]+)\}")
OOS_INTENTS = {"out_of_scope", "nlu_fallback", OOS}
# Rasa's customary names for the intents that steer a conversation.
META = {"affirm": "affirm", "deny": "deny", "stop": "cancel", "cancel": "cancel"}
DOMAIN_KEYS = {"intents", "entities", "slots", "responses", "forms", "actions", "session_config"}
DATA_KEYS = {"nlu", "rules", "stories"}
IGNORED_KEYS = {"version", "config", "e2e_actions"}
DEFAULT_ACTIONS = {
    "action_listen",
    "action_restart",
    "action_session_start",
    "action_default_fallback",
    "action_deactivate_loop",
    "action_revert_fallback_events",
    "action_default_ask_affirmation",
    "action_default_ask_rephrase",
    "action_two_stage_fallback",
    "action_unlikely_intent",
    "action_back",
    "action_extract_slots",
}
DONE_TEXT = "Thanks, I have everything I need."


@dataclass
class _Entity:
    name: str
    values: dict[str, str] = field(default_factory=dict)  # lower-cased -> canonical value
    synonyms: dict[str, list[str]] = field(default_factory=dict)  # canonical -> spoken forms
    listed: bool = False  # values from a lookup table, synonyms or a categorical slot
    regex: list[str] = field(default_factory=list)
    number: bool = False  # fills a float slot
    declared: bool = False
    used: bool = False  # annotated in an example

    def add_value(self, value: str) -> str:
        return self.values.setdefault(value.lower(), value)

    def add_synonym(self, spoken: str, value: str) -> None:
        canonical = self.add_value(value)
        if spoken.lower() != canonical.lower():
            self.synonyms.setdefault(canonical, [])
            if spoken not in self.synonyms[canonical]:
                self.synonyms[canonical].append(spoken)


@dataclass
class _Story:
    rel: str
    kind: str  # "rule" | "story"
    title: str
    steps: list
    condition: list
    entry: str


def _where(rel: str, entry: str) -> str:
    return f"{rel} {entry}"


class _Project:
    """The project read and merged: nlu entries, the domain, rules, stories, test stories."""

    def __init__(self, src: Path | list[Path], notes: list[str]):
        self.notes = notes
        self.nlu: list[tuple[str, int, dict]] = []
        self.domain: dict = {
            "intents": [],
            "entities": [],
            "slots": {},
            "responses": {},
            "forms": {},
            "actions": [],
        }
        self.domain_rel: dict[str, str] = {}  # top-level key -> file that set it last
        self.stories: list[_Story] = []
        self.tests: list[_Story] = []
        self.has_domain = False
        if isinstance(src, list | tuple):
            files = [Path(p).resolve() for p in src]
            for p in files:
                if not p.is_file():
                    raise PackImportError(p, "", "file not found")
            base = Path(*_common_parts(files))
            self.base = base
            for p in files:
                rel = str(p.relative_to(base)) if base.parts else str(p)
                test = p.name.startswith("test_") or "tests" in p.parts[len(base.parts) : -1]
                self._read(p, rel, test)
            return
        src = Path(src)
        self.base = src
        if not src.is_dir():
            raise PackImportError(src, "", "not a directory (expected a Rasa project)")
        for name in ("domain.yml", "domain.yaml"):
            if (src / name).is_file():
                self._read(src / name, name, False)
        if (src / "domain").is_dir():
            for p in sorted((src / "domain").rglob("*.y*ml")):
                self._read(p, str(p.relative_to(src)), False)
        if not self.has_domain:
            notes.append("no domain.yml: intents and entities come from the training data only")
        data = src / "data"
        if not data.is_dir():
            raise PackImportError(src / "data", "", "not found (a Rasa project keeps its NLU here)")
        for p in sorted(data.rglob("*")):
            if p.is_file() and p.suffix in (".yml", ".yaml"):
                self._read(p, str(p.relative_to(src)), False)
            elif p.is_file() and p.suffix in (".md", ".json"):
                notes.append(
                    f"{p.relative_to(src)}: Rasa 1.x Markdown/JSON training data is not "
                    "read; convert it with `rasa data convert nlu -f yaml`"
                )
        if (src / "tests").is_dir():
            for p in sorted((src / "tests").rglob("*.y*ml")):
                self._read(p, str(p.relative_to(src)), True)
        for name in ("config.yml", "config.yaml"):
            if (src / name).is_file():
                self._config(src / name, name)
        if not self.nlu:
            raise PackImportError(src / "data", "", "no NLU training data (no file with 'nlu:')")

    def _config(self, path: Path, rel: str) -> None:
        doc = load_yaml(path, rel, self.notes) or {}
        if not isinstance(doc, dict):
            raise PackImportError(rel, "", "the top level must be a mapping")
        parts = [k for k in ("pipeline", "policies") if doc.get(k)]
        if parts:
            self.notes.append(
                f"{rel}: {' and '.join(parts)} not imported (Parlance trains its own "
                "classifier and runs its own dialogue rules)"
            )
        if doc.get("language") not in (None, "en"):
            self.notes.append(
                f"{rel}: language {doc['language']!r}; the pack is declared English (the only "
                "language Parlance supports)"
            )

    def _read(self, path: Path, rel: str, test: bool) -> None:
        doc = load_yaml(path, rel, self.notes)
        if doc is None:
            self.notes.append(f"{rel}: empty file")
            return
        if not isinstance(doc, dict):
            raise PackImportError(rel, "", "the top level must be a mapping")
        version = str(doc.get("version", "3"))
        if not version.startswith("3"):
            self.notes.append(f"{rel}: format version {version!r}; read as Rasa 3.x")
        known = DOMAIN_KEYS | DATA_KEYS | IGNORED_KEYS
        unknown = [k for k in doc if k not in known]
        if unknown:
            self.notes.append(f"{rel}: keys not imported: {', '.join(map(str, unknown))}")
        if test:
            for i, s in enumerate(_list(doc.get("stories"), rel, "stories")):
                self.tests.append(self._story(s, rel, "stories", i))
            return
        for i, entry in enumerate(_list(doc.get("nlu"), rel, "nlu")):
            if not isinstance(entry, dict):
                raise PackImportError(rel, f"nlu[{i}]", "must be a mapping")
            self.nlu.append((rel, i, entry))
        for key in ("rules", "stories"):
            for i, s in enumerate(_list(doc.get(key), rel, key)):
                self.stories.append(self._story(s, rel, key, i))
        for key in [k for k in doc if k in DOMAIN_KEYS]:
            self.has_domain = self.has_domain or key != "responses"
            value = doc[key]
            if key == "session_config":
                self.notes.append(
                    f"{rel}: session_config not imported (the gateway has its own session expiry)"
                )
                continue
            if value is None:
                continue
            if key in ("intents", "entities", "actions"):
                self.domain[key] += _list(value, rel, key)
            else:
                if not isinstance(value, dict):
                    raise PackImportError(rel, key, "must be a mapping")
                self.domain[key].update(value)
                for k in value:
                    self.domain_rel[f"{key}.{k}"] = rel
            self.domain_rel.setdefault(key, rel)

    def _story(self, s, rel: str, key: str, i: int) -> _Story:
        entry = f"{key}[{i}]"
        if not isinstance(s, dict):
            raise PackImportError(rel, entry, "must be a mapping")
        kind = "rule" if key == "rules" else "story"
        title = str(s.get(kind, s.get("story", s.get("rule", ""))))
        steps = s.get("steps")
        if not isinstance(steps, list):
            raise PackImportError(rel, f"{entry} ({title})", "needs a list of steps")
        for j, step in enumerate(steps):
            if not isinstance(step, dict):
                raise PackImportError(rel, f"{entry} ({title}).steps[{j}]", "must be a mapping")
        condition = s.get("condition") or []
        if not isinstance(condition, list):
            raise PackImportError(rel, f"{entry} ({title}).condition", "must be a list")
        extra = [k for k in s if k not in (kind, "steps", "condition", "metadata")]
        story = _Story(rel, kind, title, steps, condition, f"{entry} ({title})")
        if extra:
            self.notes.append(f"{rel}: {kind} {title!r}: {', '.join(map(str, extra))} not imported")
        return story


def _common_parts(files: list[Path]) -> tuple[str, ...]:
    parts = [p.resolve().parent.parts for p in files]
    common: list[str] = []
    for group in zip(*parts, strict=False):
        if len(set(group)) != 1:
            break
        common.append(group[0])
    return tuple(common)


def _list(value, rel: str, entry: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PackImportError(rel, entry, "must be a list")
    return value


def _example_lines(entry: dict, rel: str, where: str) -> list[str]:
    """The examples of an nlu entry: a `|` block of `- ...` lines, or a list."""
    raw = entry.get("examples")
    if raw is None:
        raise PackImportError(rel, where, "no 'examples'")
    if isinstance(raw, list):
        out = []
        for j, x in enumerate(raw):
            text = x.get("text") if isinstance(x, dict) else x
            if not isinstance(text, str | int | float) or isinstance(text, bool):
                raise PackImportError(rel, f"{where}.examples[{j}]", "must be a text")
            out.append(str(text))
        return out
    if not isinstance(raw, str):
        raise PackImportError(rel, where, "'examples' must be a block of '- ' lines")
    out = []
    for n, line in enumerate(raw.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        if not s.startswith("-"):
            raise PackImportError(
                rel, where, f"examples line {n} does not start with '- ': {s[:60]!r}"
            )
        out.append(s[1:].strip())
    return out


class _Import:
    def __init__(self, project: _Project, notes: list[str]):
        self.p = project
        self.notes = notes
        self.intent_names = Names("intent", "intent")
        self.entity_names = Names("entity", "entity")
        self.slot_names = Names("slot", "slot")
        self.form_names = Names("form", "form")
        self.entities: dict[str, _Entity] = {}
        self.examples = ExampleSet("nlu")
        self.annotated: dict[str, list[str]] = defaultdict(list)  # intent -> slots
        self.roles: Counter[str] = Counter()
        self.multi_entity = 0
        self.metadata = 0
        self.synonym_entries: list[tuple[str, list[str], str]] = []  # value, spoken, where
        self.lookups: list[tuple[str, list[str], str]] = []
        self.regexes: list[tuple[str, list[str], str]] = []
        self.responses: dict[str, list] = project.domain["responses"]
        self.used_responses: set[str] = set()
        self.noted: set[tuple[str, int, str]] = set()
        self.pending: list[tuple[str, list, bool]] = []  # intent, pieces, test
        self.orphans: dict[str, dict] = {}  # types of lookups/regexes that name no entity
        self.canonical: dict[str, dict[str, str]] = {}  # entity -> spoken (lower) -> value

    # -- NLU ---------------------------------------------------------------------------
    def entity(self, original: str) -> _Entity:
        name = self.entity_names(original)
        return self.entities.setdefault(name, _Entity(name))

    def parse_example(self, text: str, rel: str, where: str) -> list:
        """The (text, slot, value) pieces of a Rasa example; the values are normalised
        later, once every synonym is known (`add_examples`)."""
        pieces: list[tuple[str, str | None, str | None]] = []
        pos = 0
        for m in _ENTITY.finditer(text):
            pieces.append((text[pos : m.start()], None, None))
            pos = m.end()
            spec: dict
            if m["short"] is not None:
                ent, _, value = m["short"].partition(":")
                spec = {"entity": ent.strip(), "value": value.strip() or None}
            else:
                raw = m["dict"] if m["dict"] is not None else f"[{m['list']}]"
                try:
                    spec = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise PackImportError(
                        rel, where, f"{m[0]!r}: annotation is not valid JSON ({e.msg})"
                    ) from None
                if isinstance(spec, list):
                    if len(spec) > 1:
                        self.multi_entity += 1
                    spec = spec[0] if spec else {}
            if not isinstance(spec, dict) or not isinstance(spec.get("entity"), str):
                raise PackImportError(rel, where, f"{m[0]!r}: annotation names no entity")
            if not spec["entity"].strip():
                raise PackImportError(rel, where, f"{m[0]!r}: empty entity name")
            ent = self.entity(spec["entity"].strip())
            ent.used = True
            for key in ("role", "group"):
                if spec.get(key) is not None:
                    self.roles[f"{ent.name} {key} {spec[key]!r}"] += 1
            value = spec.get("value")
            value = str(value).strip() if value is not None else None
            span = m["text"]
            if value and value.lower() != span.strip().lower():
                ent.add_synonym(span.strip(), value)
            else:
                ent.add_value(span.strip())
                value = None
            pieces.append((span, ent.name, value))
        pieces.append((text[pos:], None, None))
        return pieces

    def read_nlu(self) -> None:
        for rel, i, entry in self.p.nlu:
            kinds = [k for k in ("intent", "synonym", "regex", "lookup") if k in entry]
            if len(kinds) != 1:
                raise PackImportError(
                    rel, f"nlu[{i}]", "needs exactly one of intent, synonym, regex, lookup"
                )
            kind = kinds[0]
            label = entry[kind]
            if not isinstance(label, str | int | float) or not str(label).strip():
                raise PackImportError(rel, f"nlu[{i}]", f"{kind} {label!r}: needs a name")
            label = str(label).strip()
            where = f"nlu[{i}] ({kind} {label})"
            lines = _example_lines(entry, rel, where)
            if entry.get("metadata") is not None:
                self.metadata += 1
            if kind == "intent":
                intent = self.intent_name(label)
                for text in lines:
                    pieces = self.parse_example(text, rel, where)
                    self.pending.append((intent, pieces, False))
            elif kind == "synonym":
                self.synonym_entries.append((label, lines, _where(rel, where)))
            elif kind == "lookup":
                self.lookups.append((label, lines, _where(rel, where)))
            else:
                self.regexes.append((label, lines, _where(rel, where)))
        for story in self.p.tests:
            rel = story.rel
            for j, step in enumerate(story.steps):
                if "user" not in step:
                    continue
                where = f"{story.entry}.steps[{j}]"
                if not step.get("intent"):
                    self.notes.append(f"{rel}: {where}: a test turn without an intent, skipped")
                    continue
                intent = self.intent_name(str(step["intent"]))
                pieces = self.parse_example(str(step["user"]).strip(), rel, where)
                self.pending.append((intent, pieces, True))

    def add_examples(self) -> None:
        """The examples, each span's value normalised the way Rasa's synonym mapper would
        (`[current account](account)` -> value `checking`)."""
        for intent, pieces, test in self.pending:
            normalised = []
            for text, slot, value in pieces:
                if slot is not None and value is None:
                    canonical = self.canonical.get(slot, {}).get(text.strip().lower())
                    if canonical and canonical.lower() != text.strip().lower():
                        value = canonical
                normalised.append((text, slot, value))
            ex, fixes = make_example(normalised)
            written = self.examples.add(intent, ex, test=test, fixes=fixes)
            for span in written.spans if written and not test else ():
                if span.slot not in self.annotated[intent]:
                    self.annotated[intent].append(span.slot)

    def intent_name(self, label: str) -> str:
        name = self.intent_names(label)
        return OOS if name in OOS_INTENTS else name

    # -- domain ------------------------------------------------------------------------
    def read_domain(self) -> None:
        d = self.p.domain
        rel = self.p.domain_rel
        options = []
        self.domain_intents = []
        for i, x in enumerate(d["intents"]):
            if isinstance(x, dict) and len(x) == 1:
                ((name, opts),) = x.items()
                if opts:
                    options.append(f"{name} ({', '.join(opts)})")
            elif isinstance(x, str):
                name = x
            else:
                raise PackImportError(rel.get("intents", "domain.yml"), f"intents[{i}]", f"{x!r}")
            self.domain_intents.append(str(name))
        if options:
            self.notes.append(
                "domain intent options not imported (use_entities/ignore_entities/...): "
                + listing(options)
            )
        for i, x in enumerate(d["entities"]):
            if isinstance(x, dict) and len(x) == 1:
                ((name, opts),) = x.items()
                for key in ("roles", "groups"):
                    for v in (opts or {}).get(key) or []:
                        self.roles.setdefault(f"{self.entity_names(name)} {key[:-1]} {v!r}", 0)
            elif isinstance(x, str):
                name = x
            else:
                raise PackImportError(rel.get("entities", "domain.yml"), f"entities[{i}]", f"{x!r}")
            self.entity(str(name)).declared = True
        custom = [a for a in d["actions"] if isinstance(a, str) and not a.startswith("utter_")]
        if custom:
            self.notes.append(
                f"{len(custom)} custom action(s) not imported (Parlance runs no action "
                "server; write built-in actions or replies instead): " + ", ".join(custom)
            )
        undeclared = [e.name for e in self.entities.values() if e.used and not e.declared]
        if undeclared and self.p.has_domain:
            self.notes.append(
                "entities annotated in the examples but not declared in the domain "
                "(imported anyway): " + ", ".join(undeclared)
            )

    def read_slots(self) -> None:
        """Rasa slots: which entity fills each, categorical values and float ranges."""
        self.slot_entity: dict[str, str] = {}  # pack slot -> entity (from_entity)
        self.slot_specs: dict[str, dict] = {}  # pack slot -> Rasa spec
        self.slot_kind: dict[str, str] = {}  # pack slot -> entity | text | other
        self.slot_original: dict[str, str] = {}
        conditions = []
        rel = self.p.domain_rel
        for original, spec in self.p.domain["slots"].items():
            if original == "requested_slot":
                continue
            where = rel.get(f"slots.{original}", "domain.yml")
            if not isinstance(spec, dict):
                raise PackImportError(where, f"slots.{original}", "must be a mapping")
            name = self.slot_names(str(original))
            self.slot_specs[name] = spec
            self.slot_original[name] = str(original)
            mappings = spec.get("mappings")
            if mappings is None:  # Rasa 2: auto-filled by the entity of the same name
                mappings = (
                    [{"type": "from_entity", "entity": original}]
                    if (snake_eq(str(original), self.entities))
                    else []
                )
            if not isinstance(mappings, list):
                raise PackImportError(where, f"slots.{original}.mappings", "must be a list")
            kinds = []
            for m in mappings:
                if not isinstance(m, dict):
                    raise PackImportError(where, f"slots.{original}.mappings", f"{m!r}")
                kinds.append(m.get("type"))
                extra = [
                    k
                    for k in m
                    if k in ("intent", "not_intent", "role", "group", "conditions")
                    and m.get("type") in ("from_entity", "from_text")
                ]
                if extra:
                    conditions.append(f"{original} ({', '.join(extra)})")
            ents = [m.get("entity") for m in mappings if m.get("type") == "from_entity"]
            stype = spec.get("type")
            if ents and ents[0]:
                ent = self.entity(str(ents[0]))
                self.slot_entity[name] = ent.name
                self.slot_kind[name] = "entity"
                if len(set(ents)) > 1:
                    self.notes.append(
                        f"slot {original}: filled from several entities; typed as {ents[0]}"
                    )
                if stype == "categorical":
                    self._categorical(ent, spec, where, original)
                elif stype == "float":
                    ent.number = True
            elif "from_text" in kinds:
                self.slot_kind[name] = "text"
            else:
                self.slot_kind[name] = "other"
            if spec.get("initial_value") is not None:
                self.notes.append(
                    f"slot {original}: initial_value {spec['initial_value']!r} not imported"
                )
        if conditions:
            self.notes.append(
                "slot mapping conditions not imported (a slot takes its type's value "
                "wherever it is found): " + listing(conditions)
            )

    def _categorical(self, ent: _Entity, spec: dict, where: str, original: str) -> None:
        values = spec.get("values") or []
        if not isinstance(values, list):
            raise PackImportError(where, f"slots.{original}.values", "must be a list")
        for v in values:
            if v is not None and str(v).strip() and str(v) != "__other__":
                ent.add_value(str(v).strip())
                ent.listed = True

    def attach_tables(self) -> None:
        """Lookup tables, regexes and synonym entries onto their entities."""
        orphans = []
        for label, values, where in self.lookups:
            name = snake(label, "entity")
            values = [v.strip() for v in values if v.strip()]
            if name not in self.entities:
                self.orphans[name] = {"kind": "list", "values": list(dict.fromkeys(values))}
                orphans.append(f"lookup {label!r} ({where})")
                continue
            for v in values:
                self.entities[name].add_value(v)
            self.entities[name].listed = True
        for label, patterns, where in self.regexes:
            name = snake(label, "entity")
            good = []
            for pat in patterns:
                try:
                    re.compile(pat)
                except re.error as e:
                    self.notes.append(f"{where}: {pat!r} is not a Python regex ({e}); dropped")
                    continue
                good.append(pat)
            if name in self.entities:
                self.entities[name].regex += good
            elif good:
                self.orphans.setdefault(name, {"kind": "regex", "pattern": _alternation(good)})
                orphans.append(f"regex {label!r} ({where})")
        if orphans:
            self.notes.append(
                "lookup tables / regexes that name no entity (Rasa uses them as classifier "
                "features): declared as slot types that no slot uses yet: " + listing(orphans)
            )
        unused = []
        for value, spoken, where in self.synonym_entries:
            owners = [e for e in self.entities.values() if value.lower() in e.values]
            if not owners:
                unused.append(f"{value!r} ({where})")
                continue
            for ent in owners:
                ent.listed = True
                for s in spoken:
                    if s.strip():
                        ent.add_synonym(s.strip(), value)
        if unused:
            self.notes.append(
                "synonyms whose value no entity has (no annotation, lookup or categorical "
                "value): not imported: " + listing(unused)
            )
        for ent in self.entities.values():
            if ent.synonyms:
                ent.listed = True

    # -- slots.yml -----------------------------------------------------------------------
    def build_types(self) -> None:
        self.types: dict[str, dict] = {}
        self.entity_type: dict[str, str] = {}
        builtin_used, regex_unused, conflicts = [], [], []
        for ent in self.entities.values():
            tname = f"{ent.name}_values" if ent.name in BUILTIN_TYPES else ent.name
            if ent.listed:
                # a synonym of another value is not a value of its own, even when it was
                # annotated or listed: Rasa's synonym mapper turns it into that value
                spoken_to: dict[str, str] = {}
                for v, syns in ent.synonyms.items():
                    for sp in syns:
                        owner = spoken_to.setdefault(sp.lower(), v)
                        if owner != v:
                            conflicts.append(f"{ent.name}: {sp!r} ({owner!r} and {v!r})")
                values: dict[str, list[str] | None] = {}
                for v in ent.values.values():
                    if spoken_to.get(v.lower(), v) != v:
                        continue
                    spoken_to[v.lower()] = v
                    syns = [sp for sp in ent.synonyms.get(v, []) if spoken_to[sp.lower()] == v]
                    values[v] = syns or None
                self.canonical[ent.name] = spoken_to
                plain = all(v is None for v in values.values())
                self.types[tname] = {"kind": "list", "values": list(values) if plain else values}
                if ent.regex:
                    regex_unused.append(ent.name)
            elif ent.regex:
                self.types[tname] = {"kind": "regex", "pattern": _alternation(ent.regex)}
            elif ent.number:
                self.entity_type[ent.name] = "number"
                continue
            elif ent.name in BUILTIN_TYPES:
                self.entity_type[ent.name] = ent.name
                builtin_used.append(ent.name)
                continue
            else:
                self.types[tname] = {"kind": "free_text"}
            self.entity_type[ent.name] = tname
        for name, spec in self.orphans.items():
            tname = f"{name}_values" if name in BUILTIN_TYPES else name
            self.types.setdefault(tname, spec)
        if builtin_used:
            self.notes.append(
                "entities typed with Parlance's built-in type of the same name: "
                + ", ".join(builtin_used)
            )
        if regex_unused:
            self.notes.append(
                "regexes not used for entities that have a list of values (the list is the "
                "type): " + ", ".join(regex_unused)
            )
        if conflicts:
            self.notes.append(
                "synonyms claimed by two values; kept the first: " + listing(conflicts)
            )
        renamed = [t for t in self.types if t.endswith("_values") and t[:-7] in BUILTIN_TYPES]
        if renamed:
            self.notes.append(
                "type names clashing with built-in types got a '_values' suffix: "
                + ", ".join(renamed)
            )

    def build_slots(self, form_slots: set[str]) -> dict[str, dict]:
        slots: dict[str, dict] = {}
        for ent in self.entities.values():
            slots[ent.name] = {"type": self.entity_type[ent.name]}
        unmapped, copies = [], []
        for name, kind in self.slot_kind.items():
            spec = self.slot_specs[name]
            original = self.slot_original[name]
            if kind == "entity":
                ent = self.slot_entity[name]
                if name != ent:
                    slots[name] = {"type": self.entity_type[ent]}
                    copies.append(f"{original} (from {ent})")
                continue
            if name in slots:
                continue
            if kind == "other" and name not in form_slots:
                unmapped.append(f"{original} ({spec.get('type', '?')})")
                continue
            if kind == "other":
                self.notes.append(
                    f"slot {original}: filled by mappings Parlance cannot take "
                    f"({', '.join(str(m.get('type')) for m in spec.get('mappings') or [])}); "
                    "its form takes the answer to its question"
                )
            slots[name] = {"type": self._own_type(name, spec)}
        if copies:
            self.notes.append(
                "slots filled from an entity of another name take that entity's type: "
                + ", ".join(copies)
            )
        if unmapped:
            self.notes.append(
                "slots not imported (not filled from an entity or the text, and no form asks "
                "for them): " + ", ".join(unmapped)
            )
        return slots

    def _own_type(self, name: str, spec: dict) -> str:
        if spec.get("type") == "float":
            return "number"
        tname = f"{name}_values" if name in BUILTIN_TYPES else name
        if tname in self.types:
            tname = f"{tname}_slot"
        values = [str(v) for v in spec.get("values") or [] if v is not None and v != "__other__"]
        if spec.get("type") == "categorical" and values:
            self.types[tname] = {"kind": "list", "values": list(dict.fromkeys(values))}
        else:
            self.types[tname] = {"kind": "free_text"}
        return tname

    # -- responses -----------------------------------------------------------------------
    def texts(self, utter: str, allowed: set[str] | None, what: str) -> list[str]:
        """The usable text variations of a response, placeholders as `<slot>`; `allowed`
        None: any pack slot; an empty set: none at all (prompts, dialogue texts)."""
        self.used_responses.add(utter)
        if utter not in self.responses:
            self.story_notes.append(f"response {utter} is not defined in the domain")
            return []
        variations = self.responses[utter]
        where = self.p.domain_rel.get(f"responses.{utter}", "domain.yml")
        if not isinstance(variations, list):
            raise PackImportError(where, f"responses.{utter}", "must be a list of variations")
        out = []

        def note(i: int, what: str) -> None:  # once per variation, however often it is read
            if (utter, i, what) not in self.noted:
                self.noted.add((utter, i, what))
                self.response_notes[f"{utter}: {what}"] += 1

        for i, v in enumerate(variations):
            if not isinstance(v, dict):
                raise PackImportError(where, f"responses.{utter}[{i}]", "must be a mapping")
            extra = sorted(k for k in v if k not in ("text", "id", "metadata"))
            if "condition" in v or "channel" in v:
                note(i, "conditional or channel-specific variation")
                continue
            if extra:
                note(i, ", ".join(extra))
            text = v.get("text")
            if not isinstance(text, str) or not text.strip():
                continue
            converted = self.convert(text.strip(), allowed)
            if converted is None:
                note(i, f"variation using slots {what} cannot fill")
            elif len(converted) > 1000:
                note(i, "variation longer than 1000 characters")
            else:
                out.append(converted)
        return out

    def convert(self, text: str, allowed: set[str] | None) -> str | None:
        """Rasa's `{slot}` as Parlance's `<slot>`; None when a placeholder names no slot
        `allowed` (None: any pack slot) or the text already holds `<...>`."""
        if placeholders(text):  # `<b>` and the like would read as Parlance placeholders
            return None
        bad = False

        def repl(m: re.Match) -> str:
            nonlocal bad
            name = self.slot_names.map.get(m[1], self.entity_names.map.get(m[1], m[1]))
            if allowed is None and name in self.slot_entity:
                # a reply reads the user's text: the value is the entity's, under its name
                name = self.slot_entity[name]
            ok = name in self.pack_slots and (allowed is None or name in allowed)
            bad = bad or not ok
            return f"<{name}>"

        out = _RASA_SLOT.sub(repl, text)
        return None if bad else out

    # -- rules and stories ---------------------------------------------------------------
    def read_stories(self) -> None:
        self.replies: dict[str, list[str]] = {}  # intent -> utter actions
        self.activations: dict[str, list[str]] = defaultdict(list)  # form -> intents
        self.done: dict[str, list[str]] = {}  # form -> utter actions
        self.story_notes: list[str] = []
        forms = set(self.p.domain["forms"])
        for story in self.p.stories:
            reason = self._story(story, forms)
            if reason:
                self.story_notes.append(f"{story.rel} {story.kind} {story.title!r}: {reason}")

    def _story(self, story: _Story, forms: set[str]) -> str | None:
        """Record what a rule/story means, or say why it cannot be mapped."""
        steps = list(story.steps)
        while steps and steps[-1].get("action") == "action_listen":
            steps.pop()
        keys = [_step_key(s) for s in steps]
        for bad, why in (
            ("checkpoint", "checkpoints"),
            ("or", "OR steps"),
            ("user", "end-to-end user texts"),
            ("bot", "end-to-end bot texts"),
        ):
            if bad in keys:
                return f"{why} are not imported"
        cond_loop = [c.get("active_loop") for c in story.condition if isinstance(c, dict)]
        other_cond = [
            c for c in story.condition if not (isinstance(c, dict) and set(c) == {"active_loop"})
        ]
        if other_cond:
            return "conditions on slots are not imported"
        actions = [s.get("action") for s in steps if "action" in s]
        custom = [a for a in actions if a and not a.startswith("utter_") and a not in forms]
        if custom:
            kind = "default" if all(a in DEFAULT_ACTIONS for a in custom) else "custom"
            return f"{kind} action(s) {', '.join(custom)} not imported"
        intents = [s for s in steps if "intent" in s]
        if len(intents) > 1:
            turns, current = [], None
            for step in steps:
                if "intent" in step:
                    current = [str(step["intent"])]
                    turns.append(current)
                elif current is not None and step.get("action"):
                    current.append(step["action"])
            said = "; ".join(f"{t[0]} -> {', '.join(t[1:]) or 'nothing'}" for t in turns)
            return (
                f"{len(intents)} user turns: multi-turn stories are not imported (its turns: "
                f"{said})"
            )
        if any("entities" in s for s in intents):
            return "intent steps conditioned on entities are not imported"
        if any("slot_was_set" in s and not _requested_none(s) for s in steps):
            return "slot_was_set steps are not imported"
        steps = [s for s in steps if "slot_was_set" not in s]
        # form submission: [action F] active_loop: null, utter...
        loop_end = [i for i, s in enumerate(steps) if "active_loop" in s and not s["active_loop"]]
        if loop_end:
            i = loop_end[0]
            head, tail = steps[:i], steps[i + 1 :]
            form = None
            if head and head[-1].get("action") in forms:
                form = head.pop()["action"]
            activation = None
            if head:
                activation = self._activation(head, forms)
                if activation is None or form not in (None, activation[1]):
                    return "steps before the form submission are not imported"
                form = activation[1]
            elif cond_loop and cond_loop[0] in forms:
                form = form or cond_loop[0]
            if form is None:
                return "a form submission without its form"
            utters = [s.get("action") for s in tail]
            if not utters or not all(u and u.startswith("utter_") for u in utters):
                return f"form {form} submitted, then no utter_ response (not imported)"
            if activation is not None:
                self.activations[form].append(activation[0])
            self._add(self.done, form, utters, story)
            return None
        if cond_loop:
            return (
                "rules under an active form are not imported (the gateway answers a "
                "digression inside a form by itself, then asks again)"
            )
        activation = self._activation(steps, forms)
        if activation is not None:
            self.activations[activation[1]].append(activation[0])
            return None
        if intents and len(steps) >= 2 and "intent" in steps[0]:
            utters = [s.get("action") for s in steps[1:]]
            if all(u and u.startswith("utter_") for u in utters):
                self._add(self.replies, str(steps[0]["intent"]), utters, story)
                return None
        return "not one of the shapes imported (intent -> utter_*, intent -> form)"

    def _activation(self, steps: list, forms: set[str]) -> tuple[str, str] | None:
        if (
            len(steps) == 3
            and "intent" in steps[0]
            and steps[1].get("action") in forms
            and steps[2].get("active_loop") == steps[1]["action"]
        ):
            return str(steps[0]["intent"]), steps[1]["action"]
        return None

    def _add(self, table: dict, key: str, utters: list[str], story: _Story) -> None:
        if key in table and table[key] != utters:
            self.story_notes.append(
                f"{story.rel} {story.kind} {story.title!r}: {key} already answered by "
                f"{', '.join(table[key])}; {', '.join(utters)} not imported"
            )
            return
        table[key] = utters

    # -- putting it together -------------------------------------------------------------
    def run(self) -> dict:
        self.response_notes: Counter[str] = Counter()
        self.read_nlu()
        self.read_domain()
        self.read_slots()
        self.attach_tables()
        self.build_types()
        self.add_examples()
        self.read_stories()
        notes = self.notes
        if self.roles:
            notes.append(
                "entity roles and groups not imported (a Parlance slot has none; forms tell "
                "same-type slots apart with cues): "
                + listing(
                    f"{k} ({n} annotation(s))" if n else f"{k} (declared)"
                    for k, n in self.roles.items()
                )
            )
        if self.multi_entity:
            notes.append(
                f"{self.multi_entity} span(s) annotated with several entities: kept the first"
            )
        if self.metadata:
            notes.append(f"metadata of {self.metadata} nlu entries not imported")

        retrieval = self._retrieval()
        sets, more = self.examples.finish(
            order=[self.intent_name(i) for i in self.domain_intents if i not in retrieval]
        )
        pack_intents = [i for i in sets if i != OOS]
        notes += self.intent_names.notes() + self.entity_names.notes() + self.slot_names.notes()
        notes += more
        oos_labels = [o for o, n in self.intent_names.map.items() if n in OOS_INTENTS]
        if oos_labels and OOS in sets:
            notes.append(
                f"examples of {', '.join(oos_labels)} became the pack's out-of-scope examples"
            )
        if retrieval:
            notes.append(
                "retrieval intents imported as their sub-intents: "
                + "; ".join(f"{p} -> {', '.join(v)}" for p, v in retrieval.items())
            )
        if self.p.has_domain:
            declared = {self.intent_name(i) for i in self.domain_intents}
            subs = {i for v in retrieval.values() for i in v}
            undeclared = sorted(set(pack_intents) - declared - subs)
            if undeclared:
                notes.append(
                    "intents with examples but not in the domain (imported): "
                    + ", ".join(undeclared)
                )

        # forms decide which Rasa slots must exist
        form_slots: dict[str, list[str]] = {}
        for fname, spec in self.p.domain["forms"].items():
            where = self.p.domain_rel.get(f"forms.{fname}", "domain.yml")
            spec = spec or {}
            if not isinstance(spec, dict):
                raise PackImportError(where, f"forms.{fname}", "must be a mapping")
            req = spec.get("required_slots") or []
            if isinstance(req, dict):
                notes.append(f"form {fname}: Rasa 2 required_slots mapping; read its slot names")
                req = list(req)
            if not isinstance(req, list):
                raise PackImportError(where, f"forms.{fname}.required_slots", "must be a list")
            form_slots[fname] = [self.slot_names(str(s)) for s in req]
            extra = [k for k in spec if k != "required_slots"]
            if extra:
                notes.append(f"form {fname}: {', '.join(extra)} not imported")
        kept = [
            f
            for f in form_slots
            if any(self.intent_name(i) in pack_intents for i in self.activations.get(f, []))
        ]
        needed = {s for f in kept for s in form_slots[f]}
        slots = self.build_slots(needed)
        for s in sorted(needed - set(slots)):
            notes.append(f"slot {s}: required by a form but not declared; typed free_text")
            slots[s] = {"type": self._own_type(s, {})}
        self.pack_slots = set(slots)

        responses, dialogue = self._replies(pack_intents, retrieval)
        forms = self._forms(form_slots, slots, pack_intents)
        notes += self.story_notes
        if self.response_notes:
            notes.append(
                "response parts not imported (Parlance replies are text): "
                + listing(f"{k} ({n})" for k, n in self.response_notes.items())
            )
        unused = [
            r
            for r in self.responses
            if r not in self.used_responses and not r.startswith("utter_ask_")
        ]
        if unused:
            notes.append(
                "responses no imported rule or story uses, not imported: " + ", ".join(unused)
            )
        meta: dict[str, list[str]] = {}
        for i in pack_intents:
            group = META.get(i)
            if group:
                meta.setdefault(group, []).append(i)
        if meta:
            dialogue = {"meta_intents": meta, **dialogue}
            notes.append(
                "meta intents (dialogue.yml): "
                + ", ".join(f"{g}: {', '.join(v)}" for g, v in meta.items())
            )
        extra = {}
        for i in pack_intents:
            used = [s for s in self.annotated.get(i, []) if s in slots]
            for reply in responses.get(i, []):
                used += [s for s in sorted(placeholders(reply)) if s not in used]
            if used:
                extra[i] = {"slots": used}
        return {
            "intents": intents_doc(sets, extra),
            "slots": {"types": self.types, "slots": slots} if slots else None,
            "responses": {"intents": responses} if responses else None,
            "forms": {"forms": forms} if forms else None,
            "dialogue": dialogue or None,
        }

    def _retrieval(self) -> dict[str, list[str]]:
        """Rasa retrieval intents: parent -> sub-intent pack names (`chitchat/ask_name`)."""
        out: dict[str, list[str]] = defaultdict(list)
        for original, name in self.intent_names.map.items():
            if "/" in original:
                out[original.split("/", 1)[0]].append(name)
        return out

    def _dialogue_text(self, label: str, utters: list[str], dialogue: dict) -> None:
        """A reply to an out-of-scope or meta intent: one of dialogue.yml's texts."""
        name = self.intent_name(label)
        if name == OOS:
            taken = dialogue.get("fallback", {})
            free = [k for k in ("rephrase", "capabilities") if k not in taken]
            key = ("fallback", free[0]) if free else None
        else:
            group = META[name]
            key = ("meta", group) if group not in dialogue.get("meta", {}) else None
        said = f"{label} -> {', '.join(utters)}"
        if key is None:
            self.story_notes.append(f"{said}: that dialogue.yml text is already set; not imported")
            return
        texts = self._joined(utters, set(), "dialogue texts")
        if not texts:
            self.story_notes.append(f"{said}: no text without slots; not imported")
            return
        dialogue.setdefault(key[0], {})[key[1]] = texts[0]
        more = f" (kept the first of {len(texts)} variations)" if len(texts) > 1 else ""
        self.notes.append(f"{said}: became dialogue.yml {key[0]}.{key[1]}{more}")

    def _replies(self, pack_intents: list[str], retrieval: dict) -> tuple[dict, dict]:
        responses: dict[str, list[str]] = {}
        dialogue: dict = {}
        generated = []
        originals = {v: k for k, v in self.intent_names.map.items()}
        for label, utters in self.replies.items():
            name = self.intent_name(label)
            said = f"{label} -> {', '.join(utters)}"
            if label in retrieval and all(u not in self.responses for u in utters):
                for sub in retrieval[label]:
                    if sub in pack_intents:
                        texts = self.texts(f"utter_{originals[sub]}", None, "the intent")
                        if texts:
                            responses[sub] = texts
                continue
            if name == OOS or name in META:
                self._dialogue_text(label, utters, dialogue)
                continue
            if name not in pack_intents:
                self.story_notes.append(f"{said}: the intent has no examples; not imported")
                continue
            texts = self._joined(utters, None, "the intent")
            if not texts:
                self.story_notes.append(f"{said}: no usable text; not imported")
                continue
            if all(placeholders(t) for t in texts):
                bare = re.sub(r"\s*<[a-z_][a-z0-9_]*>", "", texts[0])
                bare = re.sub(r"\s+([,.!?;:])", r"\1", bare).strip() or "Okay."
                texts.append(bare)
                generated.append(f"{name}: {bare!r}")
            responses[name] = texts
        if generated:
            self.notes.append(
                "replies without placeholders added, for when the slots are not in the "
                "user's text (review them): " + listing(generated)
            )
        return responses, dialogue

    def _joined(self, utters: list[str], allowed: set[str] | None, what: str) -> list[str]:
        """Variations of the first response, each followed by the first variation of the
        others (Rasa sends them as separate messages; a pack reply is one text)."""
        first = self.texts(utters[0], allowed, what)
        rest = []
        for u in utters[1:]:
            t = self.texts(u, allowed, what)
            if t:
                rest.append(t[0])
        if rest:
            self.notes.append(f"responses {', '.join(utters)} sent in a row: joined into one text")
        return [j for j in (" ".join([f, *rest]) for f in first) if len(j) <= 1000]

    def _forms(self, form_slots: dict, slots: dict, pack_intents: list[str]) -> dict:
        forms: dict[str, dict] = {}
        starts: dict[str, str] = {}
        kinds = {t: spec["kind"] for t, spec in self.types.items()}
        for fname, req in form_slots.items():
            name = self.form_names(fname)
            if not req:
                self.notes.append(f"form {fname}: no required slots; not imported")
                continue
            intents = []
            for label in self.activations.get(fname, []):
                i = self.intent_name(label)
                if i not in pack_intents:
                    self.notes.append(f"form {fname}: intent {label} has no examples; skipped")
                elif i in starts:
                    self.notes.append(
                        f"form {fname}: {label} already starts form {starts[i]}; skipped"
                    )
                elif i not in intents:
                    intents.append(i)
                    starts[i] = name
            if not intents:
                self.notes.append(
                    f"form {fname}: no rule or story activates it after an intent; not imported"
                )
                continue
            fslots = []
            for s in req:
                original = self.slot_original.get(s, s)
                prompt = None
                for utter in (f"utter_ask_{fname}_{original}", f"utter_ask_{original}"):
                    if utter in self.responses:
                        texts = self.texts(utter, set(), "a prompt")
                        if texts:
                            prompt = texts[0]
                            if len(texts) > 1:
                                self.notes.append(
                                    f"{utter}: kept the first of {len(texts)} variations "
                                    "as the prompt"
                                )
                            break
                if prompt is None:
                    prompt = f"What is the {s.replace('_', ' ')}?"
                    self.notes.append(
                        f"form {fname}: no utter_ask_{original} response; generated the "
                        f"prompt {prompt!r}"
                    )
                fs: dict = {"slot": s, "prompt": prompt}
                stype = slots[s]["type"]
                if kinds.get(stype) == "free_text":
                    fs["free_text"] = True
                spec = self.slot_specs.get(s, {})
                if stype == "number":
                    for key, ours in (("min_value", "min"), ("max_value", "max")):
                        if isinstance(spec.get(key), int | float):
                            fs[ours] = spec[key]
                fslots.append(fs)
            done = None
            if fname in self.done:
                texts = self._joined(self.done[fname], set(req), "the form")
                done = texts[0] if texts else None
            if done is None:
                done = DONE_TEXT
                self.notes.append(
                    f"form {fname}: no response after its submission; generated the done "
                    f"text {done!r}"
                )
            forms[name] = {"intents": intents, "slots": fslots, "done": done}
        return forms


def _alternation(patterns: list[str]) -> str:
    return patterns[0] if len(patterns) == 1 else "|".join(f"(?:{p})" for p in patterns)


def _step_key(step: dict) -> str:
    for key in ("user", "bot", "intent", "action", "active_loop", "slot_was_set", "checkpoint"):
        if key in step:
            return key
    return next(iter(step))


def _requested_none(step: dict) -> bool:
    """`slot_was_set: [requested_slot: null]`, the bookkeeping of a form submission."""
    value = step.get("slot_was_set")
    return isinstance(value, list) and all(
        isinstance(x, dict) and set(x) == {"requested_slot"} and x["requested_slot"] is None
        for x in value
    )


def snake_eq(original: str, entities: dict[str, _Entity]) -> bool:
    return snake(original, "entity") in entities


def import_rasa(
    src: Path | list[Path], out: Path, name: str | None = None, overwrite: bool = False
) -> ImportReport:
    """Import a Rasa 3.x project directory (or a list of its YAML files) into a pack."""
    out = Path(out)
    check_output(out, overwrite)
    source = src if isinstance(src, list | tuple) else Path(src)
    label = ", ".join(map(str, source)) if isinstance(source, list | tuple) else str(source)
    report = ImportReport("rasa", label, out)
    project = _Project(source, report.notes)
    docs = _Import(project, report.notes).run()
    base = project.base
    docs["assistant"] = {
        "name": assistant_name(name, base, "rasa"),
        "description": f"Imported from the Rasa project {base.name} by parlance.importers.rasa.",
    }
    return write_and_check(
        report,
        out,
        docs,
        overwrite,
        f"Imported from the Rasa project {base.name} by parlance.importers.rasa.",
    )
