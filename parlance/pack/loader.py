"""Reading a pack directory into a `Pack`: every file through its pydantic model, then the
cross-file checks (`parlance.pack.checks`). Problems name the file, the entry and what is
wrong; `load_pack` refuses a pack with errors, `check_pack` returns them all (for
`parlance validate`)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from parlance.actions import ACTIONS
from parlance.label_map import LabelMap, build_label_map
from parlance.pack import models
from parlance.pack.markup import Example, parse
from parlance.slots import FreeTextType, ListType, RegexType, SlotExtractor
from parlance.templates import RawIntentReplies, Responses

# The repository's bundled packs; PARLANCE_ASSISTANTS_DIR points elsewhere (an image, a
# deployment's volume).
BUNDLED_DIR = Path(__file__).resolve().parents[2] / "assistants"
DEFAULT_PACK = "clinc150"

FILES: dict[str, type[BaseModel]] = {
    "assistant.yml": models.AssistantFile,
    "intents.yml": models.IntentsFile,
    "slots.yml": models.SlotsFile,
    "core_intents.yml": models.CoreIntentsFile,
    "responses.yml": models.ResponsesFile,
    "forms.yml": models.FormsFile,
    "actions.yml": models.ActionsFile,
    "dialogue.yml": models.DialogueFile,
    "reviewed.yml": models.ReviewedFile,
}
REQUIRED = ("assistant.yml", "intents.yml")
TESTS_DIR = "tests"


@dataclass(frozen=True)
class Problem:
    file: str
    entry: str
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        where = f"{self.file}: {self.entry}" if self.entry else self.file
        return f"{self.severity}: {where}: {self.message}"


class PackError(ValueError):
    def __init__(self, root: Path | str, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        lines = "\n".join(f"  {p}" for p in errors)
        super().__init__(f"assistant pack {root} has {len(errors)} error(s):\n{lines}")


def _bundled_root() -> Path:
    return Path(os.environ.get("PARLANCE_ASSISTANTS_DIR") or BUNDLED_DIR)


def bundled_packs() -> list[str]:
    root = _bundled_root()
    return (
        sorted(p.name for p in root.iterdir() if (p / "assistant.yml").is_file())
        if root.is_dir()
        else []
    )


def resolve(pack: str | os.PathLike) -> Path:
    """A pack directory, or the name of a bundled pack."""
    path = Path(pack)
    if path.is_dir():
        return path
    bundled = _bundled_root() / str(pack)
    if (bundled / "assistant.yml").is_file():
        return bundled
    raise PackError(
        pack,
        [
            Problem(
                str(pack),
                "",
                f"no such pack directory, and no bundled pack of that name ({bundled_packs()})",
            )
        ],
    )


def _location(loc: tuple) -> str:
    return ".".join(
        str(x)
        for x in loc
        if not (
            isinstance(x, str)
            and x
            in ("list[...]", "ListType", "RegexType", "FreeTextType", "list", "regex", "free_text")
        )
    )


def read_model(
    path: Path, model: type[BaseModel], rel: str
) -> tuple[BaseModel | None, list[Problem]]:
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, [Problem(rel, "", f"not UTF-8 (byte {e.start}); save the file as UTF-8")]
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        return None, [Problem(rel, where, f"not valid YAML: {getattr(e, 'problem', e)}")]
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        return None, [Problem(rel, "", "the top level must be a mapping")]
    try:
        return model.model_validate(doc), []
    except ValidationError as e:
        return None, [
            Problem(rel, _location(err["loc"]), err["msg"].removeprefix("Value error, "))
            for err in e.errors()
        ]


def extractor_of(slots_file: models.SlotsFile) -> SlotExtractor:
    """The built-in slot types plus those of a slots file (a pack's, or the copy a joint
    classifier artifact keeps to normalise what its tagger finds)."""
    types = {}
    for name, spec in slots_file.types.items():
        if isinstance(spec, models.ListType):
            types[name] = ListType(name, spec.values, spec.case_sensitive)
        elif isinstance(spec, models.RegexType):
            types[name] = RegexType(name, spec.pattern, spec.value_group)
        else:
            types[name] = FreeTextType(name)
    return SlotExtractor(types)


@dataclass
class Pack:
    root: Path
    assistant: models.AssistantFile
    intents_file: models.IntentsFile
    slots_file: models.SlotsFile = field(default_factory=models.SlotsFile)
    core_file: models.CoreIntentsFile | None = None
    responses_file: models.ResponsesFile = field(default_factory=models.ResponsesFile)
    forms_file: models.FormsFile = field(default_factory=models.FormsFile)
    actions_file: models.ActionsFile = field(default_factory=models.ActionsFile)
    dialogue: models.DialogueFile = field(default_factory=models.DialogueFile)
    conversations: dict[str, models.ConversationsFile] = field(default_factory=dict)
    checksum: str = ""
    reviewed: models.ReviewedFile = field(default_factory=models.ReviewedFile)

    # -- identity ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.assistant.name

    @property
    def version(self) -> str:
        return self.assistant.version

    def identity(self) -> dict:
        """What artifacts record and the gateway compares."""
        return {"name": self.name, "version": self.version, "checksum": self.checksum}

    # -- intents and labels ----------------------------------------------------------------
    @property
    def intents(self) -> dict[str, models.Intent]:
        return self.intents_file.intents

    @property
    def labels(self) -> list[str]:
        """The classifier's labels: intents sorted by name, then `oos` last."""
        return sorted(self.intents) + [models.OOS]

    @cached_property
    def examples(self) -> dict[str, list[Example]]:
        """Parsed inline training examples per intent (`oos` for out-of-scope ones)."""
        out = {name: [parse(x) for x in i.examples] for name, i in self.intents.items()}
        out[models.OOS] = [parse(x) for x in self.intents_file.out_of_scope.examples]
        return out

    @cached_property
    def test_examples(self) -> dict[str, list[Example]]:
        out = {name: [parse(x) for x in i.test_examples] for name, i in self.intents.items()}
        out[models.OOS] = [parse(x) for x in self.intents_file.out_of_scope.test_examples]
        return out

    def reviewed_texts(self, which: str = "examples") -> dict[str, list[str]]:
        """reviewed.yml's texts per label (`oos` for out-of-scope ones): its `examples`
        (training) or `test_examples` (held out)."""
        out = {name: list(getattr(e, which)) for name, e in self.reviewed.intents.items()}
        oos = list(getattr(self.reviewed.out_of_scope, which))
        if oos:
            out[models.OOS] = oos
        return {k: v for k, v in out.items() if v}

    @cached_property
    def label_map(self) -> LabelMap:
        core = self.core_file.core_intents if self.core_file else None
        return build_label_map(core, self.intents)

    # -- slots ---------------------------------------------------------------------------
    @cached_property
    def slot_types(self) -> dict[str, str]:
        """Slot name -> type name."""
        return {name: s.type for name, s in self.slots_file.slots.items()}

    @cached_property
    def extractor(self) -> SlotExtractor:
        return extractor_of(self.slots_file)

    def extract_slots(
        self, text: str, slot_names, now=None, learned=(), tagged=()
    ) -> dict[str, str]:
        """Values for the named slots found in `text`: the spans the classifier's tagger
        learned (`learned`: `Slot`s naming their slot) first, then for each other slot the
        first rule match of its type not taken by an earlier slot of the same type
        (`SlotExtractor.combine` says how the two meet). A list or free-text slot in
        `tagged` is left to the tagger (its rules only repair the tagger's spans); for the
        others the rules lead and the tagger adds what they miss."""
        names = [n for n in slot_names if n in self.slot_types]
        if not names:
            return {}
        x = self.extractor
        ours = [s for s in learned if s.name in names]
        by_rule = [n for n in names if n not in tagged or x.rule_based(self.slot_types[n])]
        kinds = {n: self.slot_types[n] for n in names}
        quiet, first = x.leads(kinds, tagged)
        found = x.combine(x.extract_all(text, set(kinds.values()), now), ours, quiet, first, text)
        values: dict[str, str] = {}
        used: set[int] = set()
        for i, slot in enumerate(found):
            if slot.name is not None and slot.name not in values:
                values[slot.name] = slot.value
                used.add(i)
        for name in by_rule:
            if name in values:
                continue
            for i, slot in enumerate(found):
                if i not in used and slot.name is None and slot.kind == self.slot_types[name]:
                    values[name] = slot.value
                    used.add(i)
                    break
        return {n: values[n] for n in names if n in values}

    # -- replies and actions -------------------------------------------------------------
    def facts_of(self, raw_intent: str) -> tuple[str, ...]:
        action = self.intents.get(raw_intent) and self.intents[raw_intent].action
        return self.action_facts(action)

    def action_facts(self, action: str | None) -> tuple[str, ...]:
        """The facts a built-in or webhook action may return."""
        if action in ACTIONS:
            return ACTIONS[action].facts
        hook = self.actions_file.actions.get(action) if action else None
        return tuple(hook.facts) if hook else ()

    @property
    def webhooks(self) -> dict[str, models.WebhookAction]:
        return self.actions_file.actions

    @cached_property
    def responses(self) -> Responses:
        by_raw = {}
        for raw, replies in self.responses_file.intents.items():
            if raw in self.intents:
                by_raw[raw] = RawIntentReplies(
                    self.label_map.core_of(raw),
                    raw,
                    tuple(self.intents[raw].slots),
                    self.facts_of(raw),
                    tuple(replies),
                )
        return Responses(by_raw, {k: tuple(v) for k, v in self.responses_file.core_intents.items()})

    @property
    def generated_intents(self) -> list[str]:
        """Raw intents whose replies the generator writes."""
        return [i for i in self.intents if self.label_map.is_generated(self.label_map.core_of(i))]


def _read(
    root: Path,
) -> tuple[dict[str, BaseModel], dict[str, models.ConversationsFile], list[Problem], str]:
    problems: list[Problem] = []
    docs: dict[str, BaseModel] = {}
    h = hashlib.sha256()
    for rel, model in FILES.items():
        path = root / rel
        if not path.is_file():
            if rel in REQUIRED:
                problems.append(Problem(rel, "", "missing (every pack needs this file)"))
            continue
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
        doc, found = read_model(path, model, rel)
        problems += found
        if doc is not None:
            docs[rel] = doc
    for alt in ("assistant.yaml", "intents.yaml", "slots.yaml", "forms.yaml"):
        if (root / alt).is_file():
            problems.append(
                Problem(alt, "", f"not read: pack files end in .yml (rename it to {alt[:-5]}.yml)")
            )
    conversations = {}
    tests = root / TESTS_DIR
    if tests.is_dir():
        for path in sorted(tests.glob("*.y*ml")):
            rel = f"{TESTS_DIR}/{path.name}"
            h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
            doc, found = read_model(path, models.ConversationsFile, rel)
            problems += found
            if doc is not None:
                conversations[rel] = doc
    return docs, conversations, problems, "sha256:" + h.hexdigest()


def check_pack(pack: str | os.PathLike) -> tuple[Pack | None, list[Problem]]:
    """Every problem of the pack (errors and warnings); the Pack when the files parsed."""
    from parlance.pack.checks import check

    try:
        root = resolve(pack)
    except PackError as e:
        return None, e.problems
    if not root.is_dir():
        return None, [Problem(str(root), "", "not a directory")]
    docs, conversations, problems, checksum = _read(root)
    if "assistant.yml" not in docs or "intents.yml" not in docs:
        return None, problems
    loaded = Pack(
        root=root,
        assistant=docs["assistant.yml"],
        intents_file=docs["intents.yml"],
        slots_file=docs.get("slots.yml", models.SlotsFile()),
        core_file=docs.get("core_intents.yml"),
        responses_file=docs.get("responses.yml", models.ResponsesFile()),
        forms_file=docs.get("forms.yml", models.FormsFile()),
        actions_file=docs.get("actions.yml", models.ActionsFile()),
        dialogue=docs.get("dialogue.yml", models.DialogueFile()),
        reviewed=docs.get("reviewed.yml", models.ReviewedFile()),
        conversations=conversations,
        checksum=checksum,
    )
    if any(p.severity == "error" for p in problems):
        return loaded, problems
    return loaded, problems + check(loaded)


def load_pack(pack: str | os.PathLike = DEFAULT_PACK) -> Pack:
    """The pack, checked; a `PackError` listing every error otherwise."""
    loaded, problems = check_pack(pack)
    if loaded is None or any(p.severity == "error" for p in problems):
        raise PackError(pack, problems)
    return loaded
