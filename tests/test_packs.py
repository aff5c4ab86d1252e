"""Assistant packs: the bundled packs load and validate, the CLINC150 pack keeps the map,
replies and forms the stack was measured with, and every kind of broken pack is refused with
a message naming the file, the entry and the problem."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from parlance.pack import PackError, check_pack, load_pack
from parlance.pack.markup import MarkupError, parse, render
from parlance.templates import TemplateFiller, placeholders
from services.generator.text import invented_values

ROOT = Path(__file__).resolve().parents[1]
CLINC = ROOT / "assistants" / "clinc150"


@pytest.fixture(scope="module")
def clinc():
    return load_pack("clinc150")


def errors(problems):
    return [str(p) for p in problems if p.severity == "error"]


def test_clinc150_pack_has_the_measured_map(clinc, clinc_path):
    from training.data import load_from_dir

    lm = clinc.label_map
    assert len(lm.core) == 20 and len(lm.generated) == 10
    labels = load_from_dir(clinc_path, "full").labels
    assert clinc.labels == labels  # 150 intents sorted, then oos
    assert set(labels) == set(lm.raw_to_core)
    assert lm.core_of("oos") == "out_of_scope" and not lm.is_generated("out_of_scope")
    assert lm.core_of("yes") == "dialogue_control" and lm.core_of("transfer") == "money_transfer"
    assert lm.is_generated(lm.core_of("calculator"))
    assert sorted(clinc.forms_file.forms) == [
        "book_flight",
        "money_transfer",
        "pay_bill",
        "reminder",
        "restaurant_reservation",
    ]
    assert clinc.checksum.startswith("sha256:") and clinc.identity()["name"] == "clinc150"


def test_every_generated_core_intent_has_varied_replies_for_every_intent(clinc):
    lm, responses = clinc.label_map, clinc.responses
    assert sorted(responses.core_intents()) == sorted(lm.generated + ["dialogue_control"]) or set(
        lm.generated
    ) <= set(responses.core_intents())
    for core in lm.generated:
        replies = [t for r in responses.raw_intents(core) for t in r.replies]
        assert len(replies) >= 8 and len(set(replies)) == len(replies), core
        assert {r.raw_intent for r in responses.raw_intents(core)} == set(lm.core[core].intents)


def test_generated_templates_carry_no_values_of_their_own(clinc):
    """The hallucination check counts any number or entity not from the request; sound only
    if the templates themselves contain none."""
    for raw in clinc.generated_intents:
        for reply in clinc.responses.by_raw[raw].replies:
            bare = re.sub(r"<[a-z_]+>", "", reply)
            assert not re.search(r"\d", bare), reply
            places = clinc.extractor.extract_all(bare, ["place", "language"])
            assert [
                p
                for p in places
                if not p.value.startswith("the ") and p.value not in ("home", "work", "downtown")
            ] == [], reply
    assert invented_values("Here's the weather in Paris.", "weather please", {}) == ["Paris"]


def test_template_filler_answers_the_raw_intent(clinc):
    """With the generator down, "hello" must not get another small-talk intent's reply."""
    filler = TemplateFiller(clinc.responses)
    for raw in ("greeting", "goodbye", "what_is_your_name", "weather", "who_made_you"):
        own = set(clinc.responses.by_raw[raw].replies)
        for text in ("hi", "hello there", "so", "what", "ok then please"):
            reply = filler.reply_for(raw, clinc.label_map.core_of(raw), text, {}, {})
            assert reply in own, (raw, reply)
    timer = filler.reply_for(
        "timer", "timers_and_alarms", "set a timer for 5 minutes", {"duration": "5 minutes"}, {}
    )
    assert "5 minutes" in timer
    assert filler.reply_for("transactions", "account_info", "my transactions", {}, {}).startswith(
        "I can't see your accounts"
    )
    # balance has replies of its own, for the back-end's figure (actions.yml)
    assert "$12.00" in filler.reply_for("balance", "account_info", "x", {}, {"balance": "$12.00"})


@pytest.mark.parametrize(
    "marked,text,spans",
    [
        (
            "fix my [road bike](bike_type) today",
            "fix my road bike today",
            [("bike_type", "road bike", "road bike", 7, 16)],
        ),
        (
            "[mtb](bike_type:mountain bike) please",
            "mtb please",
            [("bike_type", "mtb", "mountain bike", 0, 3)],
        ),
        (
            'a [big]{"entity": "size", "value": "large"} one',
            "a big one",
            [("size", "big", "large", 2, 5)],
        ),
        ("no markup here", "no markup here", []),
    ],
)
def test_markup(marked, text, spans):
    ex = parse(marked)
    assert ex.text == text
    assert [(s.slot, s.text, s.value, s.start, s.end) for s in ex.spans] == spans
    assert parse(render(ex)) == ex


@pytest.mark.parametrize(
    "marked,message",
    [
        ('[x]{"entity": 3}', 'needs an "entity"'),
        ("[x](Bad-Name)", "lower_snake_case"),
        ("[x]{nope}", "not valid JSON"),
    ],
)
def test_bad_markup(marked, message):
    with pytest.raises(MarkupError, match=re.escape(message)):
        parse(marked)


def copy_pack(tmp_path: Path, src: Path = CLINC) -> Path:
    dst = tmp_path / "pack"
    shutil.copytree(src, dst)
    return dst


def edit(pack: Path, file: str, change) -> None:
    doc = yaml.safe_load((pack / file).read_text()) if (pack / file).is_file() else {}
    change(doc)
    (pack / file).write_text(yaml.safe_dump(doc, allow_unicode=True))


def small_pack(tmp_path: Path) -> Path:
    """A tiny valid pack with inline examples, a list type, a form and replies."""
    root = tmp_path / "small"
    root.mkdir()
    (root / "assistant.yml").write_text("name: small\nversion: '1'\n")
    (root / "intents.yml").write_text(
        yaml.safe_dump(
            {
                "intents": {
                    "greet": {"examples": ["hi", "hello", "hey there", "good morning", "hiya"]},
                    "order": {
                        "examples": [
                            "a [large](size) pizza please",
                            "i want a pizza",
                            "order a [small](size) one",
                            "pizza time",
                            "get me a pizza",
                        ],
                        "slots": ["size"],
                    },
                    "yes": {"examples": ["yes", "yep", "sure", "correct", "right"]},
                }
            }
        )
    )
    (root / "slots.yml").write_text(
        yaml.safe_dump(
            {
                "types": {
                    "pizza_size": {"kind": "list", "values": {"large": ["big"], "small": None}}
                },
                "slots": {"size": {"type": "pizza_size"}},
            }
        )
    )
    (root / "responses.yml").write_text(
        yaml.safe_dump(
            {
                "intents": {
                    "greet": ["Hello!"],
                    "order": ["A <size> pizza, coming up.", "A pizza, coming up."],
                }
            }
        )
    )
    (root / "forms.yml").write_text(
        yaml.safe_dump(
            {
                "forms": {
                    "order_form": {
                        "intents": ["order"],
                        "slots": [{"slot": "size", "prompt": "What size?"}],
                        "confirm": "A <size> pizza?",
                        "done": "Ordered a <size> pizza.",
                    }
                }
            }
        )
    )
    (root / "dialogue.yml").write_text(yaml.safe_dump({"meta_intents": {"affirm": ["yes"]}}))
    return root


def test_small_pack_is_valid_and_extracts_its_own_type(tmp_path):
    pack = load_pack(small_pack(tmp_path))
    assert pack.labels == ["greet", "order", "yes", "oos"]
    assert pack.label_map.core_of("order") == "order"  # no core map: its own core intent
    assert pack.extract_slots("a BIG pizza", ["size"]) == {"size": "large"}


@pytest.mark.parametrize(
    "file,change,expected",
    [
        (
            "intents.yml",
            lambda d: d["intents"]["greet"]["examples"].append("i want a pizza"),
            "'i want a pizza' is also an example of",
        ),
        (
            "intents.yml",
            lambda d: d["intents"].__setitem__("empty", {}),
            "intents.yml: intents.empty: has no examples",
        ),
        (
            "intents.yml",
            lambda d: d["intents"]["order"]["slots"].append("colour"),
            "intents.yml: intents.order.slots: unknown slot 'colour'",
        ),
        (
            "intents.yml",
            lambda d: d["intents"]["order"]["examples"].append("[red](colour) one"),
            "annotates unknown slot 'colour'",
        ),
        (
            "intents.yml",
            lambda d: d["intents"]["greet"].__setitem__("exampels", ["x"]),
            "intents.yml: intents.greet.exampels: Extra inputs are not permitted",
        ),
        (
            "intents.yml",
            lambda d: d["intents"]["greet"].__setitem__("action", "teleport"),
            "intents.yml: intents.greet.action: unknown action 'teleport'",
        ),
        (
            "responses.yml",
            lambda d: d["intents"]["greet"].append("Hi <name>"),
            "responses.yml: intents.greet[1]: uses ['name']",
        ),
        (
            "responses.yml",
            lambda d: d["intents"].__setitem__("order", ["A <size> pizza."]),
            "responses.yml: intents.order: no reply fits when only nothing is known",
        ),
        (
            "forms.yml",
            lambda d: d["forms"]["order_form"]["slots"].append(
                {"slot": "crust", "prompt": "Which crust?"}
            ),
            "forms.yml: forms.order_form.slots[1]: unknown slot 'crust'",
        ),
        (
            "forms.yml",
            lambda d: d["forms"]["order_form"]["intents"].append("refund"),
            "forms.yml: forms.order_form.intents: unknown intent 'refund'",
        ),
        (
            "forms.yml",
            lambda d: d["forms"]["order_form"].__setitem__("done", "Done <when>."),
            "forms.yml: forms.order_form.done: uses ['when']",
        ),
        (
            "slots.yml",
            lambda d: d["slots"]["size"].__setitem__("type", "shape"),
            "slots.yml: slots.size: unknown type 'shape'",
        ),
        (
            "slots.yml",
            lambda d: d["types"].__setitem__("bad", {"kind": "regex", "pattern": "("}),
            "slots.yml: types.bad.pattern: not a valid regular expression",
        ),
        (
            "dialogue.yml",
            lambda d: d["meta_intents"].__setitem__("deny", ["no"]),
            "dialogue.yml: meta_intents.deny: unknown intent 'no'",
        ),
        (
            "core_intents.yml",
            lambda d: d.__setitem__("core_intents", {"food": {"intents": ["order", "greet"]}}),
            "core_intents.yml: core_intents: intents in no core intent: yes",
        ),
        (
            "assistant.yml",
            lambda d: d.__setitem__("default_timezone", "Mars/Olympus"),
            "assistant.yml: default_timezone: unknown IANA time zone",
        ),
        (
            "intents.yml",
            lambda d: d["intents"]["greet"].__setitem__(
                "requires", [{"slot": "size", "prompt": "What size?"}]
            ),
            "intents.yml: intents.greet: required slots must also be listed "
            "under 'slots': ['size']",
        ),
        (
            "intents.yml",
            lambda d: d["intents"]["order"].__setitem__(
                "requires", [{"slot": "size", "prompt": "What size?"}]
            ),
            "intents.yml: intents.order.requires: the intent starts a form in forms.yml",
        ),
        (
            "dialogue.yml",
            lambda d: d.__setitem__("fallback", {"confirm": "Do you want <what>?"}),
            "dialogue.yml: fallback.confirm: unknown placeholders ['what']",
        ),
    ],
)
def test_each_problem_is_reported_with_file_entry_and_reason(tmp_path, file, change, expected):
    root = small_pack(tmp_path)
    edit(root, file, change)
    _, problems = check_pack(root)
    found = errors(problems)
    assert any(expected in p for p in found), found
    with pytest.raises(PackError, match=re.escape(expected.split(": ")[0])):
        load_pack(root)


def test_warnings_do_not_stop_a_pack(tmp_path):
    root = small_pack(tmp_path)
    edit(
        root,
        "intents.yml",
        lambda d: d["intents"]["greet"].__setitem__("examples", ["hi", "hi", "yo"]),
    )
    pack, problems = check_pack(root)
    warnings = [str(p) for p in problems if p.severity == "warning"]
    assert any("duplicate example 'hi'" in w for w in warnings)
    assert any("only 3 examples" in w for w in warnings)
    load_pack(root)


def test_unreadable_files_are_named(tmp_path):
    root = small_pack(tmp_path)
    (root / "forms.yml").write_text("forms: [unclosed")
    assert any(
        p.startswith("error: forms.yml: line") and "not valid YAML" in p
        for p in errors(check_pack(root)[1])
    )
    (root / "forms.yml").write_bytes("forms: {}\n# caf\xe9\n".encode("latin-1"))
    assert any("forms.yml" in p and "not UTF-8" in p for p in errors(check_pack(root)[1]))
    (root / "forms.yml").unlink()
    (root / "intents.yml").unlink()
    assert errors(check_pack(root)[1]) == [
        "error: intents.yml: missing (every pack needs this file)"
    ]
    with pytest.raises(PackError, match="no such pack directory"):
        load_pack(tmp_path / "nowhere")


def test_clinc_pack_edits_are_caught(tmp_path):
    root = copy_pack(tmp_path)
    edit(
        root,
        "core_intents.yml",
        lambda d: d["core_intents"]["small_talk"]["intents"].append("timer"),
    )
    assert any(
        "'timer' is already in core intent 'small_talk'" in p
        or "'timer' is already in core intent 'timers_and_alarms'" in p
        for p in errors(check_pack(root)[1])
    )
    root2 = copy_pack(tmp_path / "b")
    edit(root2, "responses.yml", lambda d: d["intents"]["greeting"].append("Top 3 tips"))
    assert any(
        "intents.greeting[4]: has a digit of its own" in p for p in errors(check_pack(root2)[1])
    )


def test_each_slot_combination_of_the_clinc_pack_has_a_reply(clinc):
    for entry in clinc.responses.by_raw.values():
        full = set(entry.slots) | set(entry.facts)
        if entry.raw_intent != "play_music" and entry.slots:  # artist or genre, not both
            assert any(placeholders(r) == full for r in entry.replies), entry.raw_intent


def test_cli_init_validate_and_bad_pack(tmp_path, capsys):
    from parlance.cli import main

    assert main(["init", str(tmp_path / "coffee")]) == 0
    assert main(["validate", str(tmp_path / "coffee")]) == 0
    out = capsys.readouterr().out
    assert "coffee 0.1.0: 4 intents" in out and "no errors" in out
    pack = load_pack(tmp_path / "coffee")
    assert pack.extract_slots("a grande latte", ["size"]) == {"size": "large"}
    assert main(["init", str(tmp_path / "coffee")]) == 2  # never over an existing pack
    edit(
        tmp_path / "coffee",
        "forms.yml",
        lambda d: d["forms"]["coffee_order"]["slots"][0].__setitem__("slot", "milk"),
    )
    assert main(["validate", str(tmp_path / "coffee")]) == 1
    assert (
        "error: forms.yml: forms.coffee_order.slots[0]: unknown slot 'milk'"
        in capsys.readouterr().out
    )


def test_a_question_nobody_follows_up_is_reported(tmp_path):
    """A reply that asks for one of the intent's slots, with the slot not required, is a
    question whose answer the dialogue would not expect."""
    root = small_pack(tmp_path)
    edit(root, "forms.yml", lambda d: d.__setitem__("forms", {}))
    edit(root, "responses.yml", lambda d: d["intents"]["order"].append("Which size?"))
    _, problems = check_pack(root)
    asks = [p for p in problems if "asks a question" in p.message]
    assert [(p.file, p.entry, p.severity) for p in asks] == [
        ("responses.yml", "intents.order[2]", "warning")
    ]
    # required: the one-slot form asks, so the template is no longer reported
    edit(
        root,
        "intents.yml",
        lambda d: d["intents"]["order"].__setitem__(
            "requires", [{"slot": "size", "prompt": "What size?"}]
        ),
    )
    assert not [p for p in check_pack(root)[1] if "asks a question" in p.message]


def test_clinc_pack_asks_no_question_it_does_not_follow_up(clinc):
    from parlance.pack.checks import check

    assert not [p for p in check(clinc) if "asks a question" in p.message]
    # the one-slot forms the issue names
    needs = {n: [r.slot for r in clinc.intents[n].requires] for n in clinc.intents}
    assert needs["alarm"] == ["time"] and needs["timer"] == ["duration"]
    assert needs["translate"] == ["phrase", "language"] and needs["exchange_rate"] == ["currency"]
    assert needs["weather"] == [] and needs["time"] == []  # the default place / zone answers


def test_every_clinc_intent_has_a_confirmation_phrase(clinc):
    for name, intent in clinc.intents.items():
        assert intent.description and intent.description[0].islower(), name
        assert not intent.description.endswith(("?", ".")), name


def test_actions_file_problems_are_reported(tmp_path):
    root = small_pack(tmp_path)
    hook = {"url": "${SHOP_URL:-http://127.0.0.1:5055}/order", "secret": "${SHOP_SECRET}"}
    edit(root, "actions.yml", lambda d: d.update({"actions": {"place_order": hook}}))
    edit(root, "forms.yml", lambda d: d["forms"]["order_form"].update({"action": "place_order"}))
    pack, problems = check_pack(root)
    assert not [p for p in problems if p.severity == "error"], problems
    assert pack.forms_file.forms["order_form"].action == "place_order"
    cases = [
        (
            lambda d: d["forms"]["order_form"].update({"action": "teleport"}),
            "forms.yml",
            "forms.yml: forms.order_form.action: unknown action 'teleport'",
        ),
        (
            lambda d: d["forms"]["order_form"].update({"done": "Order <number> placed."}),
            "forms.yml",
            "forms.yml: forms.order_form.done: uses ['number'], not slots of this form or "
            "facts of its action",
        ),
        (
            lambda d: d["actions"]["place_order"].update({"facts": ["size"]}),
            "actions.yml",
            "actions.yml: actions.place_order.facts: 'size' is also a slot",
        ),
        (
            lambda d: d["actions"]["place_order"].update({"url": "ftp://shop/order"}),
            "actions.yml",
            "actions.yml: actions.place_order.url: must be an http(s) URL",
        ),
        (
            lambda d: d["actions"]["place_order"].update({"url": "${SHOP_URL/order"}),
            "actions.yml",
            "actions.yml: actions.place_order.url: an unclosed or malformed",
        ),
        (
            lambda d: d["actions"].update({"spell": hook}),
            "actions.yml",
            "actions.yml: actions.spell: 'spell' is a built-in action",
        ),
    ]
    for change, file, expected in cases:
        case = tmp_path / f"case{cases.index((change, file, expected))}"
        shutil.copytree(root, case)
        edit(case, file, change)
        found = [str(p) for p in check_pack(case)[1]]
        assert any(expected in p for p in found), (expected, found)
    # a literal secret, or none, is a warning, not an error
    edit(root, "actions.yml", lambda d: d["actions"]["place_order"].update({"secret": "hunter2"}))
    warnings = [p for p in check_pack(root)[1] if p.severity == "warning"]
    assert any("a literal secret in the pack" in p.message for p in warnings)
