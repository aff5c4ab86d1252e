"""Rules that span files (each file alone is checked by its pydantic model): what
`parlance validate` reports, in the manner of `rasa data validate`. Errors make a pack
unusable; warnings are what it will do badly."""

from __future__ import annotations

import itertools
import re
from collections import defaultdict

from parlance.actions import ACTIONS
from parlance.pack.loader import Pack, Problem
from parlance.pack.markup import MarkupError, parse
from parlance.pack.models import ENV_REFERENCE, OOS, ListType
from parlance.slots import BUILTIN_TYPES
from parlance.templates import PLACEHOLDER, placeholders

MIN_EXAMPLES = 5  # fewer trains a weak intent
MIN_GENERATED_REPLIES = 8  # per generated core intent: the generator needs variety
# The form texts' own placeholders.
FORM_TEXT_PLACEHOLDERS = {
    "resume": {"prompt"},
    "reask": {"prompt"},
    "invalid": {"problem", "prompt"},
}


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def check(pack: Pack) -> list[Problem]:
    out: list[Problem] = []
    for rule in RULES:
        out += rule(pack)
    return out


def _types(pack: Pack) -> list[Problem]:
    out = []
    for name in pack.slots_file.types:
        if name in BUILTIN_TYPES:
            out.append(
                Problem("slots.yml", f"types.{name}", "is a built-in type; choose another name")
            )
    known = set(BUILTIN_TYPES) | set(pack.slots_file.types)
    for name, slot in pack.slots_file.slots.items():
        if slot.type not in known:
            out.append(
                Problem(
                    "slots.yml",
                    f"slots.{name}",
                    f"unknown type {slot.type!r} (built in: "
                    f"{', '.join(sorted(BUILTIN_TYPES))}; or declare it under types)",
                )
            )
    for name, spec in pack.slots_file.types.items():
        if isinstance(spec, ListType):
            seen: dict[str, str] = {}
            for value, synonyms in spec.values.items():
                for spoken in [value, *(synonyms or ())]:
                    key = spoken if spec.case_sensitive else spoken.lower()
                    if key in seen and seen[key] != value:
                        out.append(
                            Problem(
                                "slots.yml",
                                f"types.{name}",
                                f"{spoken!r} is a synonym of both {seen[key]!r} and {value!r}",
                            )
                        )
                    seen[key] = value
    return out


def _examples(pack: Pack) -> list[Problem]:
    out = []
    slots = set(pack.slots_file.slots)
    owner: dict[str, str] = {}
    external = pack.assistant.examples_from is not None
    for name, intent in [*pack.intents.items(), (OOS, pack.intents_file.out_of_scope)]:
        entry = f"intents.{name}" if name != OOS else "out_of_scope"
        seen: set[str] = set()
        for field_name in ("examples", "test_examples"):
            for i, marked in enumerate(getattr(intent, field_name)):
                try:
                    ex = parse(marked)
                except MarkupError as e:
                    out.append(Problem("intents.yml", f"{entry}.{field_name}[{i}]", str(e)))
                    continue
                for span in ex.spans:
                    if span.slot not in slots:
                        out.append(
                            Problem(
                                "intents.yml",
                                f"{entry}.{field_name}[{i}]",
                                f"annotates unknown slot {span.slot!r} (declare it in slots.yml)",
                            )
                        )
                key = _norm(ex.text)
                if key in seen:
                    out.append(
                        Problem(
                            "intents.yml",
                            f"{entry}.{field_name}[{i}]",
                            f"duplicate example {ex.text!r}",
                            "warning",
                        )
                    )
                seen.add(key)
                if field_name != "examples":
                    continue  # test examples: checked against every intent's below
                if key in owner and owner[key] != name:
                    out.append(
                        Problem(
                            "intents.yml",
                            f"{entry}.{field_name}[{i}]",
                            f"{ex.text!r} is also an example of {owner[key]!r}: "
                            "the classifier cannot learn both",
                        )
                    )
                owner.setdefault(key, name)
        if name == OOS or external:
            continue
        if not intent.examples:
            out.append(Problem("intents.yml", entry, "has no examples"))
        elif len(intent.examples) < MIN_EXAMPLES:
            out.append(
                Problem(
                    "intents.yml",
                    entry,
                    f"only {len(intent.examples)} examples; {MIN_EXAMPLES}+ train a usable intent",
                    "warning",
                )
            )
    # A test example that is another intent's training example: the test set's own label
    # disagrees with the training data (a warning: benchmarks keep their test sets as is).
    for name, intent in [*pack.intents.items(), (OOS, pack.intents_file.out_of_scope)]:
        entry = f"intents.{name}" if name != OOS else "out_of_scope"
        for i, marked in enumerate(intent.test_examples):
            try:
                key = _norm(parse(marked).text)
            except MarkupError:
                continue
            if owner.get(key, name) != name:
                out.append(
                    Problem(
                        "intents.yml",
                        f"{entry}.test_examples[{i}]",
                        f"{marked!r} is a training example of {owner[key]!r}",
                        "warning",
                    )
                )
    return out


def _intent_refs(pack: Pack) -> list[Problem]:
    out = []
    slots = set(pack.slots_file.slots)
    for name, intent in pack.intents.items():
        for s in intent.slots:
            if s not in slots:
                out.append(
                    Problem(
                        "intents.yml",
                        f"intents.{name}.slots",
                        f"unknown slot {s!r} (declare it in slots.yml)",
                    )
                )
        if (
            intent.action is not None
            and intent.action not in ACTIONS
            and intent.action not in pack.webhooks
        ):
            out.append(
                Problem(
                    "intents.yml",
                    f"intents.{name}.action",
                    f"unknown action {intent.action!r} (built in: {', '.join(sorted(ACTIONS))}; "
                    "or declare it in actions.yml)",
                )
            )
        if intent.generated is not None and pack.core_file is not None:
            out.append(
                Problem(
                    "intents.yml",
                    f"intents.{name}.generated",
                    "set 'generated' on the core intent in core_intents.yml",
                )
            )
    return out


def _core_map(pack: Pack) -> list[Problem]:
    if pack.core_file is None:
        return []
    out = []
    mapped: dict[str, str] = {}
    known = set(pack.intents) | {OOS}
    for core, spec in pack.core_file.core_intents.items():
        for raw in spec.intents:
            if raw not in known:
                out.append(
                    Problem("core_intents.yml", f"core_intents.{core}", f"unknown intent {raw!r}")
                )
            elif raw in mapped:
                out.append(
                    Problem(
                        "core_intents.yml",
                        f"core_intents.{core}",
                        f"{raw!r} is already in core intent {mapped[raw]!r}",
                    )
                )
            mapped.setdefault(raw, core)
    missing = sorted(set(pack.intents) - set(mapped))
    if missing:
        out.append(
            Problem(
                "core_intents.yml",
                "core_intents",
                f"intents in no core intent: {', '.join(missing)}",
            )
        )
    return out


def _slot_combinations(pack: Pack, raw: str) -> list[set[str]]:
    """Every set of values a reply of `raw` may find available: any subset of its slots,
    plus the facts its action computes from them. Required slots are always there (a form
    asks for them first)."""
    intent = pack.intents[raw]
    action = ACTIONS.get(intent.action) if intent.action else None
    hook = intent.action in pack.webhooks
    required = [r.slot for r in intent.requires]
    optional = [s for s in intent.slots if s not in required]
    combos = []
    for n in range(len(optional) + 1):
        for subset in itertools.combinations(optional, n):
            subset = (*required, *subset)
            available = set(subset)
            types = {pack.slot_types.get(s, s) for s in subset}
            if action and set(action.needs) <= types:
                available |= set(action.facts)
            # a webhook's facts: its reply carries them (a failure has a text of its own)
            available |= set(pack.webhooks[intent.action].facts) if hook else set()
            combos.append(available)
    return combos


def _responses(pack: Pack) -> list[Problem]:
    out = []
    lm = pack.label_map
    forms_of = {i for f in pack.forms_file.forms.values() for i in f.intents}
    meta = {i for group in pack.dialogue.meta_intents.model_dump().values() for i in group}
    for raw, replies in pack.responses_file.intents.items():
        entry = f"intents.{raw}"
        if raw not in pack.intents:
            out.append(Problem("responses.yml", entry, "unknown intent"))
            continue
        allowed = set(pack.intents[raw].slots) | set(pack.facts_of(raw))
        generated = lm.is_generated(lm.core_of(raw))
        for i, reply in enumerate(replies):
            unknown = placeholders(reply) - allowed
            if unknown:
                out.append(
                    Problem(
                        "responses.yml",
                        f"{entry}[{i}]",
                        f"uses {sorted(unknown)}, not among the intent's slots and "
                        f"facts {sorted(allowed)}",
                    )
                )
            if generated and re.search(r"\d", PLACEHOLDER.sub("", reply)):
                out.append(
                    Problem(
                        "responses.yml",
                        f"{entry}[{i}]",
                        "has a digit of its own; in a generated reply every number "
                        "must come from a slot or fact",
                    )
                )
        for combo in _slot_combinations(pack, raw):
            if not any(placeholders(r) <= combo for r in replies):
                out.append(
                    Problem(
                        "responses.yml",
                        entry,
                        f"no reply fits when only {sorted(combo) or 'nothing'} is "
                        "known: add one using only those placeholders",
                    )
                )
    for core, replies in pack.responses_file.core_intents.items():
        if core not in lm.core:
            out.append(Problem("responses.yml", f"core_intents.{core}", "unknown core intent"))
            continue
        for i, reply in enumerate(replies):
            if placeholders(reply):
                out.append(
                    Problem(
                        "responses.yml",
                        f"core_intents.{core}[{i}]",
                        "core-intent replies cannot use placeholders",
                    )
                )
    per_core: dict[str, int] = defaultdict(int)
    for raw in pack.intents:
        core = lm.core_of(raw)
        n = len(pack.responses_file.intents.get(raw, ()))
        per_core[core] += n
        if lm.is_generated(core) and n == 0:
            out.append(
                Problem(
                    "responses.yml",
                    f"intents.{raw}",
                    f"the generator answers {core!r}, so this intent needs replies to learn from",
                )
            )
        elif (
            n == 0
            and raw not in forms_of
            and raw not in meta
            and not pack.responses_file.core_intents.get(core)
        ):
            out.append(
                Problem(
                    "responses.yml",
                    f"intents.{raw}",
                    "no reply: the fallback's 'capabilities' text will answer it",
                    "warning",
                )
            )
    for core in lm.generated:
        if per_core[core] < MIN_GENERATED_REPLIES:
            out.append(
                Problem(
                    "responses.yml",
                    f"core intent {core}",
                    f"{per_core[core]} replies; the generator needs "
                    f"{MIN_GENERATED_REPLIES}+ per generated core intent",
                    "warning",
                )
            )
    return out


def _forms(pack: Pack) -> list[Problem]:
    out = []
    starts: dict[str, str] = {}
    for name, form in pack.forms_file.forms.items():
        entry = f"forms.{name}"
        own = {s.slot for s in form.slots}
        for intent in form.intents:
            if intent not in pack.intents:
                out.append(Problem("forms.yml", f"{entry}.intents", f"unknown intent {intent!r}"))
            elif intent in starts:
                out.append(
                    Problem(
                        "forms.yml",
                        f"{entry}.intents",
                        f"{intent!r} already starts form {starts[intent]!r}",
                    )
                )
            starts.setdefault(intent, name)
        for i, s in enumerate(form.slots):
            if s.slot not in pack.slot_types:
                out.append(
                    Problem(
                        "forms.yml",
                        f"{entry}.slots[{i}]",
                        f"unknown slot {s.slot!r} (declare it in slots.yml)",
                    )
                )
                continue
            kind = pack.slot_types[s.slot]
            if s.accept_number and kind != "money":
                out.append(
                    Problem("forms.yml", f"{entry}.slots[{i}]", "accept_number is for money slots")
                )
            if (s.min is not None or s.max is not None) and kind not in ("money", "number"):
                out.append(
                    Problem(
                        "forms.yml",
                        f"{entry}.slots[{i}]",
                        "min/max apply to number and money slots",
                    )
                )
        facts = set(pack.action_facts(form.action))
        for label, text, allowed in (
            ("confirm", form.confirm, own),
            ("done", form.done, own | facts),
        ):
            unknown = placeholders(text or "") - allowed
            if unknown and label == "done" and form.action in pack.webhooks:
                continue  # reported by _actions, with the action's facts named
            if unknown:
                out.append(
                    Problem(
                        "forms.yml",
                        f"{entry}.{label}",
                        f"uses {sorted(unknown)}, not slots of this form",
                    )
                )
        for a, b in form.distinct:
            for x in (a, b):
                if x not in own:
                    out.append(
                        Problem(
                            "forms.yml", f"{entry}.distinct", f"{x!r} is not a slot of this form"
                        )
                    )
    return out


def _actions(pack: Pack) -> list[Problem]:
    out = []
    for name, hook in pack.webhooks.items():
        entry = f"actions.{name}"
        if name in ACTIONS:
            out.append(
                Problem("actions.yml", entry, f"{name!r} is a built-in action; choose another name")
            )
        slots = set(pack.slot_types)
        for fact in hook.facts:
            if fact in slots:
                out.append(
                    Problem(
                        "actions.yml",
                        f"{entry}.facts",
                        f"{fact!r} is also a slot: templates could not tell them apart",
                    )
                )
        # a reference stands for its default, or for some http URL
        worst = (hook.retries + 1) * hook.timeout_s + sum(
            min(0.1 * 2**i, 1.0) for i in range(hook.retries)
        )
        if worst > 8:
            out.append(
                Problem(
                    "actions.yml",
                    entry,
                    f"a call can take {worst:g} s with its retries: close to or past the "
                    "gateway's session lock (GATEWAY_SESSION_LOCK_TIMEOUT_S, 10 s by default), "
                    "after which another turn of the session may start meanwhile",
                    "warning",
                )
            )
        url = ENV_REFERENCE.sub(lambda m: m.group(2) or "http://host", hook.url)
        if not re.match(r"^https?://[^/\s]+", url):
            out.append(Problem("actions.yml", f"{entry}.url", "must be an http(s) URL"))
        if hook.secret is None:
            out.append(
                Problem(
                    "actions.yml",
                    f"{entry}.secret",
                    "no secret: requests go unsigned and the back-end cannot tell them "
                    "from forged ones",
                    "warning",
                )
            )
        elif not ENV_REFERENCE.search(hook.secret):
            out.append(
                Problem(
                    "actions.yml",
                    f"{entry}.secret",
                    "a literal secret in the pack: use ${VAR} so it stays out of the files",
                    "warning",
                )
            )
    for name, form in pack.forms_file.forms.items():
        if form.action is None:
            continue
        if form.action not in pack.webhooks:
            out.append(
                Problem(
                    "forms.yml",
                    f"forms.{name}.action",
                    f"unknown action {form.action!r}: forms call webhook actions of actions.yml",
                )
            )
            continue
        own = {s.slot for s in form.slots} | set(pack.webhooks[form.action].facts)
        unknown = placeholders(form.done) - own
        if unknown:
            out.append(
                Problem(
                    "forms.yml",
                    f"forms.{name}.done",
                    f"uses {sorted(unknown)}, not slots of this form or facts of its action",
                )
            )
    return out


def _required_slots(pack: Pack) -> list[Problem]:
    """Intents with required slots become one-slot forms named after the intent."""
    out = []
    starts = {i for f in pack.forms_file.forms.values() for i in f.intents}
    for name, intent in pack.intents.items():
        entry = f"intents.{name}.requires"
        if not intent.requires:
            continue
        if name in pack.forms_file.forms:
            out.append(
                Problem("intents.yml", entry, f"a form in forms.yml is already named {name!r}")
            )
        if name in starts:
            out.append(
                Problem(
                    "intents.yml",
                    entry,
                    "the intent starts a form in forms.yml: list the slots there instead",
                )
            )
        for i, r in enumerate(intent.requires):
            if r.slot not in pack.slot_types:
                out.append(Problem("intents.yml", f"{entry}[{i}]", f"unknown slot {r.slot!r}"))
    return out


def _unanswered_questions(pack: Pack) -> list[Problem]:
    """A reply that asks for a slot must leave the dialogue expecting the answer: a question
    template without one of the intent's slots, for a slot that is not required, is a
    question nobody follows up."""
    out = []
    in_forms = {i for f in pack.forms_file.forms.values() for i in f.intents}
    for raw, replies in pack.responses_file.intents.items():
        intent = pack.intents.get(raw)
        if intent is None or not intent.slots or raw in in_forms:
            continue
        required = {r.slot for r in intent.requires}
        for i, reply in enumerate(replies):
            if not reply.rstrip().endswith("?"):
                continue
            asked = [s for s in intent.slots if s not in placeholders(reply) and s not in required]
            if asked and required | placeholders(reply) < set(intent.slots):
                out.append(
                    Problem(
                        "responses.yml",
                        f"intents.{raw}[{i}]",
                        f"asks a question, but the user's answer is not expected: declare "
                        f"the slot it asks for under the intent's 'requires' ({asked})",
                        "warning",
                    )
                )
    return out


def _dialogue(pack: Pack) -> list[Problem]:
    out = []
    for name, text in (("confirm", pack.dialogue.fallback.confirm),):
        unknown = placeholders(text) - {"intent"}
        if unknown:
            out.append(
                Problem(
                    "dialogue.yml", f"fallback.{name}", f"unknown placeholders {sorted(unknown)}"
                )
            )
    for group, intents in pack.dialogue.meta_intents.model_dump().items():
        for intent in intents:
            if intent not in pack.intents:
                out.append(
                    Problem("dialogue.yml", f"meta_intents.{group}", f"unknown intent {intent!r}")
                )
    for name, pattern in pack.dialogue.patterns.model_dump().items():
        try:
            re.compile(pattern)
        except re.error as e:
            out.append(
                Problem("dialogue.yml", f"patterns.{name}", f"not a valid regular expression: {e}")
            )
    for name, text in pack.dialogue.form.model_dump().items():
        unknown = placeholders(text) - FORM_TEXT_PLACEHOLDERS.get(name, set())
        if unknown:
            out.append(
                Problem("dialogue.yml", f"form.{name}", f"unknown placeholders {sorted(unknown)}")
            )
    return out


def _conversations(pack: Pack) -> list[Problem]:
    out = []
    known = set(pack.intents) | {OOS}
    forms = (
        set(pack.forms_file.forms) | {i for i, x in pack.intents.items() if x.requires} | {"none"}
    )
    for rel, doc in pack.conversations.items():
        for c, conv in enumerate(doc.conversations):
            for t, turn in enumerate(conv.turns):
                entry = f"conversations[{c}] ({conv.name}).turns[{t}]"
                if turn.intent is not None and turn.intent not in known:
                    out.append(Problem(rel, entry, f"unknown intent {turn.intent!r}"))
                if turn.confirming is not None and turn.confirming not in pack.intents:
                    out.append(Problem(rel, entry, f"unknown intent {turn.confirming!r}"))
                if turn.form is not None and turn.form not in forms:
                    out.append(Problem(rel, entry, f"unknown form {turn.form!r}"))
    return out


def _reviewed(pack: Pack) -> list[Problem]:
    """reviewed.yml names only the pack's intents, and holds no text twice (a text both
    trained on and held out would test nothing)."""
    out = []
    owner: dict[str, str] = {}
    for name, entry in [
        *pack.reviewed.intents.items(),
        (OOS, pack.reviewed.out_of_scope),
    ]:
        where = f"intents.{name}" if name != OOS else "out_of_scope"
        if name != OOS and name not in pack.intents:
            out.append(Problem("reviewed.yml", where, f"{name!r} is not an intent of intents.yml"))
        for field_name in ("examples", "test_examples"):
            for i, text in enumerate(getattr(entry, field_name)):
                key = _norm(text)
                if key in owner:
                    out.append(
                        Problem(
                            "reviewed.yml",
                            f"{where}.{field_name}[{i}]",
                            f"{text!r} is already reviewed as {owner[key]!r}",
                        )
                    )
                owner.setdefault(key, name)
    return out


RULES = (
    _types,
    _examples,
    _reviewed,
    _intent_refs,
    _core_map,
    _responses,
    _forms,
    _actions,
    _required_slots,
    _unanswered_questions,
    _dialogue,
    _conversations,
)
