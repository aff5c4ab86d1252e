"""The importers (parlance.importers) and the pack writer, on real files: the SNIPS 2017
benchmark as published (one file not UTF-8), a Rasa 3 project that uses every feature the
importer maps and several it cannot (tests/data/rasa_project), CLINC150's oos-eval JSON, and
messy CSV/JSONL tables written here. Each import must write a pack that `check_pack` finds no
error in and `load_pack` loads, with the notes saying exactly what was dropped and why."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from parlance.importers import (
    IMPORTERS,
    ImportReport,
    PackImportError,
    decode,
    import_clinc150,
    import_rasa,
    import_snips,
    import_table,
    snake,
)
from parlance.pack import check_pack, load_pack
from parlance.pack.markup import parse
from parlance.pack.writer import PackWriteError, write_pack

HERE = Path(__file__).resolve().parent
RASA = HERE / "data" / "rasa_project"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def snips_dir() -> Path:
    path = Path(os.environ.get("SNIPS2017_DIR") or SHARED / "snips2017")
    if not (path / "train_PlayMusic_full.json").is_file():
        pytest.skip(f"SNIPS 2017 not found at {path} (set SNIPS2017_DIR to its directory)")
    return path


def clinc_source() -> Path:
    path = Path(os.environ.get("CLINC150_DIR") or SHARED / "clinc150")
    if not (path / "data_full.json").is_file():
        pytest.skip(f"CLINC150 not found at {path} (set CLINC150_DIR to its directory)")
    return path


def no_errors(report: ImportReport) -> None:
    assert report.errors == [], "\n".join(map(str, report.errors))
    _, problems = check_pack(report.out)
    assert [p for p in problems if p.severity == "error"] == []


def spans(marked: str) -> list[tuple[str, str, str]]:
    return [(s.slot, s.text, s.value) for s in parse(marked).spans]


# ----------------------------------------------------------------- helpers and writer


def test_registry_names_every_importer():
    assert set(IMPORTERS) == {"rasa", "csv", "snips", "clinc150"}
    assert IMPORTERS["rasa"] is import_rasa and IMPORTERS["csv"] is import_table
    assert IMPORTERS["snips"] is import_snips and IMPORTERS["clinc150"] is import_clinc150


@pytest.mark.parametrize(
    "name, expected",
    [
        ("AddToPlaylist", "add_to_playlist"),
        ("timeRange", "time_range"),
        ("Check.Balance", "check_balance"),
        ("book-table", "book_table"),
        ("chitchat/ask_name", "chitchat_ask_name"),
        ("HTTPError", "http_error"),
        ("2fa reset", "intent_2fa_reset"),
        ("café", "cafe"),
        ("问候", "intent_5362df3f"),
    ],
)
def test_snake(name, expected):
    assert snake(name, "intent") == expected


def test_decode_tells_the_encodings_apart():
    assert decode("café".encode(), "f") == ("café", None)
    assert decode(b"\xef\xbb\xbfcaf\xc3\xa9", "f") == ("café", None)
    text, note = decode("caf\xe9 \x93quoted\x94".encode("latin-1"), "f.csv")
    assert text == "café “quoted”"
    assert note == "f.csv: not UTF-8 (byte 3); decoded as cp1252 (Windows Western European)"
    text, note = decode(b"caf\xe9 \x81", "f.csv")  # 0x81 is undefined in cp1252
    assert text == "café \x81" and note == "f.csv: not UTF-8 (byte 3); decoded as Latin-1"
    text, note = decode("naïve café ".encode() + b"and one stray \xe9", "f")
    assert text == "naïve café and one stray é"
    assert note == (
        "f: mostly UTF-8, but 1 byte sequence(s) are not (first at byte 27); read those as cp1252"
    )
    cesu = "é🍕".encode("utf-16-le").decode("utf-16-le", "surrogatepass")
    cesu_bytes = "é".encode() + "\ud83c\udf55".encode("utf-8", "surrogatepass")
    assert cesu == "é🍕"
    text, note = decode(cesu_bytes, "f")
    assert text == "é🍕" and "CESU-8" in note and "U+1F355" in note


def test_writer_validates_quotes_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "pack"
    intents = {
        "intents": {
            "yes": {"examples": ["yes", "yep", "y", "on"]},
            "no": {"examples": ["no", "n", "off", "nope"]},
        }
    }
    dialogue = {"meta_intents": {"affirm": ["yes"], "deny": ["no"]}}
    forms = {
        "forms": {"f": {"intents": ["yes"], "slots": [{"slot": "x", "prompt": "?"}], "done": "ok"}}
    }
    slots = {"slots": {"x": {"type": "word"}}}
    write_pack(out, {"name": "t"}, intents, slots, forms=forms, dialogue=dialogue)
    text = (out / "intents.yml").read_text()
    assert "    - 'y'\n" in text and "    - 'n'\n" in text and "    - 'on'\n" in text
    assert "examples:\n    - 'yes'\n" in text  # block style, quoted
    pack = load_pack(out)
    assert pack.intents["no"].examples == ["no", "n", "off", "nope"]
    assert pack.dialogue.meta_intents.affirm == ["yes"]

    with pytest.raises(FileExistsError, match="not empty"):
        write_pack(out, {"name": "t"}, intents)
    write_pack(out, {"name": "t"}, intents, overwrite=True)
    assert not (out / "forms.yml").exists()  # stale files of the earlier write are gone
    assert not (out / "dialogue.yml").exists()

    bad = {"intents": {"Bad Name": {"examples": ["x"]}}}
    with pytest.raises(PackWriteError, match="intents.yml"):
        write_pack(tmp_path / "bad", {"name": "t"}, bad)
    assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------- SNIPS 2017


@pytest.fixture(scope="module")
def snips(tmp_path_factory) -> ImportReport:
    return import_snips(snips_dir(), tmp_path_factory.mktemp("snips") / "pack")


@pytest.fixture(scope="module")
def snips_pack(snips):
    return load_pack(snips.out)


def _snips_originals(src: Path) -> dict[str, dict[str, list[tuple[str, str | None]]]]:
    """intent -> normalised text -> segments, read independently of the importer (the
    PlayMusic file joined from its CESU-8 surrogate pair)."""
    out: dict[str, dict] = {}
    for path in sorted(src.glob("*.json")):
        raw = path.read_bytes().decode("utf-8", "surrogatepass")
        doc = json.loads(raw.encode("utf-16", "surrogatepass").decode("utf-16"))
        ((label, items),) = doc.items()
        for item in items:
            segs = [(s["text"], s.get("entity")) for s in item["data"]]
            text = " ".join("".join(t for t, _ in segs).split())
            out.setdefault(snake(label), {}).setdefault(text, segs)
    return out


def test_snips_counts_and_notes(snips):
    assert snips.counts == {
        "intents": 7,
        "examples": 13577,
        "test_examples": 700,
        "out_of_scope_examples": 0,
        "out_of_scope_test_examples": 0,
        "slots": 39,
        "forms": 0,
        "responses": 0,
    }
    assert snips.notes == [
        "train_PlayMusic_full.json: not valid UTF-8 (byte 150732): 1 character(s) beyond the "
        "Basic Multilingual Plane (U+1F355) are written as surrogate pairs (CESU-8); read as "
        "UTF-8 with the pairs joined (its 29 other non-ASCII characters are valid UTF-8, which "
        "reading it as Latin-1 would garble)",
        "7 intent name(s) changed to lower_snake_case: AddToPlaylist -> add_to_playlist; "
        "BookRestaurant -> book_restaurant; GetWeather -> get_weather; PlayMusic -> "
        "play_music; RateBook -> rate_book; SearchCreativeWork -> search_creative_work; "
        "SearchScreeningEvent -> search_screening_event",
        "1 slot name(s) changed to lower_snake_case: timeRange -> time_range",
        "snips2017: 6 slot span(s) began or ended with spaces: moved the spaces outside the "
        "annotation",
        "snips2017: 167 text(s) held line breaks, tabs or repeated spaces: collapsed to single "
        "spaces",
        "snips2017: dropped 207 duplicate training example(s) (same text ignoring case and "
        "spacing): add_to_playlist 6, book_restaurant 5, get_weather 9, play_music 21, "
        "rate_book 49, search_creative_work 3, search_screening_event 114",
        "snips2017: kept 5 test example(s) that repeat another test example (the test set "
        "stays as the source has it): get_weather 1, rate_book 2, search_screening_event 2",
        "snips2017: kept 11 test example(s) that repeat a training example of the same intent "
        "(the test set stays as the source has it): add_to_playlist 1, get_weather 1, "
        "play_music 3, rate_book 3, search_screening_event 3",
        "39 slot type(s) are lists of the values seen in the training files only (validate_* "
        "files not used for them)",
    ]
    no_errors(snips)
    kinds = {
        p.message.split(" '")[0] if p.message.startswith("duplicate") else p.message
        for p in snips.warnings
    }
    # the kept test-set overlaps are warnings, as is the lack of replies
    assert kinds == {
        "no reply: the fallback's 'capabilities' text will answer it",
        "duplicate example",
    }
    assert sum(p.message.startswith("duplicate") for p in snips.warnings) == 15


def test_snips_pack_loads_and_every_example_reads_back_as_the_original(snips_pack):
    pack = snips_pack
    assert sorted(pack.intents) == [
        "add_to_playlist",
        "book_restaurant",
        "get_weather",
        "play_music",
        "rate_book",
        "search_creative_work",
        "search_screening_event",
    ]
    originals = _snips_originals(snips_dir())
    checked = 0
    for intent in pack.intents:
        for ex in pack.examples[intent] + pack.test_examples[intent]:
            segs = originals[intent][ex.text]  # the text is the original, spaces collapsed
            want = [(e, " ".join(t.split())) for t, e in segs if e and t.strip()]
            assert [(s.slot, s.text) for s in ex.spans] == [(snake(e), t) for e, t in want]
            assert all(ex.text[s.start : s.end] == s.text == s.value for s in ex.spans)
            checked += 1
    assert checked == 13577 + 700


def test_snips_latin1_file_and_span_edges(snips_pack):
    pack = snips_pack
    music = pack.intents["play_music"].examples
    assert "Play [Burhøns](album) by [Ernie C](artist)." in music
    assert "I want toi hear some [Pop Punk Perfection 🍕](playlist) off of [Deezer](service)" in (
        music
    )
    assert "Play the [album](music_item) [alas y raíces](album) by [Dave Pybus](artist)." in music
    assert not any("Ã" in x for x in music)  # no Latin-1 mojibake of UTF-8 text
    playlist = pack.intents["add_to_playlist"].examples[0]
    assert spans(playlist) == [
        ("music_item", "song", "song"),
        ("playlist", "Cita Romántica", "Cita Romántica"),
    ]
    # 'in a year ' was annotated with its trailing space: the space moved outside
    restaurant = [x for x in pack.intents["book_restaurant"].examples if "fascility" in x]
    assert restaurant == [
        "book a [brasserie](restaurant_type) with [internet](facility) fascility for "
        "[5](party_size_number) [in a year](time_range) in [Oklahoma](state)"
    ]
    assert "Let's play [Jamie Robertson](artist)'s [Handover](album) on [vimeo](service)" in (
        pack.intents["play_music"].test_examples
    )


def test_snips_list_types_hold_training_values_only(snips_pack):
    pack = snips_pack
    assert pack.slot_types["time_range"] == "time_range"
    cuisine = {v.lower() for v in pack.slots_file.types["cuisine"].values}
    assert "italian" in cuisine
    assert "turkish" not in cuisine  # annotated only in validate_BookRestaurant.json
    assert pack.extract_slots("play something by ernie c", ["artist"]) == {"artist": "Ernie C"}


def t(text: str, entity: str | None = None) -> dict:
    """A SNIPS segment."""
    return {"text": text, **({"entity": entity} if entity else {})}


def _snips_file(path: Path, intent: str, utterances: list[list[dict]], encoding="utf-8"):
    doc = {intent: [{"data": u} for u in utterances]}
    path.write_bytes(json.dumps(doc, ensure_ascii=False).encode(encoding))


def test_snips_edge_cases(tmp_path):
    src = tmp_path / "snips"
    src.mkdir()
    _snips_file(
        src / "train_PlayMusic_full.json",
        "PlayMusic",
        [
            [t("play "), t("Café Tacvba", "artist"), t(" now")],
            [t("play "), t(" the hits ", "playlist")],
            [t("play "), t("[live]", "album"), t(" by "), t("Muse", "artist")],
            [t("play [the](x) song "), t("Yellow", "track")],
            [t("   ")],
            [t("play something by "), t("Muse", "artist")],
            [t("play "), t("a song", "music_item"), t(" by "), t("muse", "artist")],
        ],
        encoding="latin-1",
    )
    _snips_file(
        src / "validate_PlayMusic.json",
        "PlayMusic",
        [
            [
                t("play "),
                t("Yellow", "track"),
                t(" by "),
                t("Coldplay", "artist"),
                t(" on "),
                t("Spotify", "service"),
            ]
        ],
    )
    report = import_snips(src, tmp_path / "pack", name="snips-edge")
    assert report.notes == [
        "train_PlayMusic_full.json: not UTF-8 (byte 57); decoded as cp1252 (Windows Western "
        "European)",
        "1 intent name(s) changed to lower_snake_case: PlayMusic -> play_music",
        "snips: 1 slot span(s) began or ended with spaces: moved the spaces outside the annotation",
        "snips: 1 text(s) held line breaks, tabs or repeated spaces: collapsed to single spaces",
        "snips: 1 example(s) had an annotated span containing '[' or ']', which the markup "
        "cannot carry: those annotations were dropped (the text is kept)",
        "snips: 1 example(s) had brackets that would read as markup: replaced '[' ']' with '(' ')'",
        "snips: dropped 1 empty text(s)",
        "slot(s) annotated only in validate_* files: service; declared with a free_text type "
        "(no values from the test set)",
        "4 slot type(s) are lists of the values seen in the training files only (validate_* "
        "files not used for them)",
    ]
    no_errors(report)
    pack = load_pack(report.out)
    assert pack.intents["play_music"].examples == [
        "play [Café Tacvba](artist) now",
        "play [the hits](playlist)",
        "play [live] by [Muse](artist)",
        "play (the)(x) song [Yellow](track)",
        "play something by [Muse](artist)",
        "play [a song](music_item) by [muse](artist)",
    ]
    assert pack.slots_file.types["artist"].values == {"Café Tacvba": None, "Muse": None}
    assert pack.slots_file.types["service"].kind == "free_text"
    assert "album" not in pack.slot_types  # its one span could not be kept
    assert pack.intents["play_music"].slots == ["artist", "music_item", "playlist", "track"]


def test_snips_bad_input_names_the_file(tmp_path):
    src = tmp_path / "snips"
    src.mkdir()
    with pytest.raises(PackImportError, match="no train_<Intent>_full.json"):
        import_snips(src, tmp_path / "out")
    (src / "train_GetWeather_full.json").write_text('{"GetWeather": [{"data": [{"txt": 1}]}]}')
    with pytest.raises(PackImportError) as e:
        import_snips(src, tmp_path / "out")
    assert str(e.value) == (
        'train_GetWeather_full.json: GetWeather[0].data[0]: expected {"text": "..."}'
    )
    (src / "train_GetWeather_full.json").write_text('{"GetWeather": [')
    with pytest.raises(
        PackImportError,
        match=r"train_GetWeather_full.json: line 1 column 17: "
        r"not valid JSON",
    ):
        import_snips(src, tmp_path / "out")
    (src / "train_GetWeather_full.json").write_text('{"RateBook": []}')
    with pytest.raises(PackImportError, match="the file name says intent 'GetWeather'"):
        import_snips(src, tmp_path / "out")


# ----------------------------------------------------------------- Rasa


@pytest.fixture(scope="module")
def rasa(tmp_path_factory) -> ImportReport:
    return import_rasa(RASA, tmp_path_factory.mktemp("rasa") / "pack")


def test_rasa_counts_and_pack(rasa):
    assert rasa.counts == {
        "intents": 15,
        "examples": 74,
        "test_examples": 3,
        "out_of_scope_examples": 4,
        "out_of_scope_test_examples": 0,
        "slots": 13,
        "forms": 3,
        "responses": 8,
    }
    no_errors(rasa)
    assert sorted(str(p) for p in rasa.warnings) == [
        "warning: intents.yml: intents.bot_challenge: only 4 examples; 5+ train a usable intent",
        "warning: intents.yml: intents.greet: only 4 examples; 5+ train a usable intent",
        "warning: responses.yml: intents.ask_weather: no reply: the fallback's 'capabilities' "
        "text will answer it",
        "warning: responses.yml: intents.give_phone: no reply: the fallback's 'capabilities' "
        "text will answer it",
    ]
    pack = load_pack(rasa.out)
    assert pack.name == "rasa_project"
    assert sorted(pack.intents) == [
        "affirm", "ask_weather", "book_table", "bot_challenge", "check_balance",
        "chitchat_ask_age", "chitchat_ask_name", "deny", "fly", "give_phone", "goodbye", "greet",
        "order_pizza", "stop", "transfer_money",
    ]  # fmt: skip
    assert pack.intents_file.out_of_scope.examples[0] == "I want to order a car"
    assert pack.intents["greet"].test_examples == ["hello assistant"]


def test_rasa_entities_synonyms_and_slot_types(rasa):
    pack = load_pack(rasa.out)
    types = pack.slots_file.types
    assert types["account"].values == {
        "savings": ["saving", "savings account"],
        "checking": ["checking account", "current account"],
        "credit": ["credit card"],
    }
    # the synonym `current account` of `checking` is the value of the annotation, as Rasa's
    # EntitySynonymMapper would make it, and what the slot extractor returns
    balance = pack.intents["check_balance"].examples
    assert "what is left on my [current account](account:checking)" in balance
    assert "show me my [saving](account:savings) balance" in balance  # span edges trimmed
    assert spans(balance[1]) == [("account", "checking account", "checking")]
    assert pack.extract_slots("how much is in my current account", ["account"]) == {
        "account": "checking"
    }
    assert types["city"].values == {
        "Berlin": None, "London": None, "Paris": None, "New York City": ["NYC", "the big apple"],
    }  # fmt: skip
    assert pack.extract_slots("a flight to the big apple", ["city"]) == {"city": "New York City"}
    assert types["phone_number"].pattern == r"\d{10}"
    assert types["airline"].values == {"Lufthansa": None, "KLM": None}  # for a slot to use
    assert types["zipcode"].pattern == r"\d{5}"
    assert types["pizza_size"].values == {"large": None, "small": None, "medium": None}
    assert pack.slot_types == {
        "account": "account",
        "amount": "number",
        "people": "number",
        "cuisine": "cuisine",
        "pizza_size": "pizza_size",
        "pizza_type": "pizza_type",
        "city": "city",
        "phone_number": "phone_number",
        "number": "number",
        "account_type": "account",
        "num_people": "number",
        "customer_name": "customer_name",
        "recipient": "recipient",
    }
    fly = pack.intents["fly"].examples
    assert spans(fly[0]) == [("city", "Berlin", "Berlin"), ("city", "London", "London")]
    assert spans(fly[1]) == [("city", "NYC", "New York City")]


def test_rasa_replies_forms_and_dialogue(rasa):
    pack = load_pack(rasa.out)
    replies = pack.responses_file.intents
    assert replies["check_balance"] == [
        "Your <account> balance is 1,234 credits.",
        "Your balance is 1,234 credits.",
    ]
    assert pack.intents["check_balance"].slots == ["account"]
    assert replies["greet"] == ["Hey there! What can I do for you?"]
    assert replies["goodbye"] == ["Bye, talk to you soon."]
    assert replies["bot_challenge"] == ["I am a bot, powered by Rasa."]
    assert replies["fly"] == ["I can't book flights."]
    assert replies["chitchat_ask_name"] == ["I'm Penny, the bank's assistant."]
    forms = pack.forms_file.forms
    assert sorted(forms) == ["pizza_form", "table_form", "transfer_form"]
    transfer = forms["transfer_form"]
    assert transfer.intents == ["transfer_money"]
    assert [(s.slot, s.prompt, s.free_text, s.min, s.max) for s in transfer.slots] == [
        ("amount", "How much should I transfer?", False, 1, 10000),
        ("account_type", "From which account?", False, None, None),
        ("recipient", "What is the recipient?", True, None, None),
    ]
    assert transfer.done == "Transferring <amount> from your <account_type> account."
    table = forms["table_form"]
    assert table.intents == ["book_table"]
    assert [s.prompt for s in table.slots] == [
        "What cuisine would you like?",
        "For how many people?",
        "Under what name?",
    ]
    assert table.done == (
        "Booked a <cuisine> table for <num_people> under <customer_name>. Anything else?"
    )
    pizza = forms["pizza_form"]
    assert pizza.intents == ["order_pizza"]
    assert [s.prompt for s in pizza.slots] == ["What size of pizza?", "What is the pizza type?"]
    assert pizza.done == "Thanks, I have everything I need."
    d = pack.dialogue
    assert (d.meta_intents.affirm, d.meta_intents.deny, d.meta_intents.cancel) == (
        ["affirm"],
        ["deny"],
        ["stop"],
    )
    assert d.meta.deny == "Alright, no problem." and d.meta.cancel == "Okay, stopped."
    assert d.fallback.rephrase == "Sorry, I can't help with that."
    assert d.fallback.capabilities == "I didn't quite understand. Could you rephrase?"


RASA_NOTES = [
    "domain.yml: session_config not imported (the gateway has its own session expiry)",
    "data/rules.yml: rule 'Say goodbye without waiting': wait_for_user_input not imported",
    "config.yml: pipeline and policies not imported (Parlance trains its own classifier and "
    "runs its own dialogue rules)",
    "domain intent options not imported (use_entities/ignore_entities/...): order_pizza "
    "(use_entities)",
    "1 custom action(s) not imported (Parlance runs no action server; write built-in actions "
    "or replies instead): action_check_weather",
    "slot mapping conditions not imported (a slot takes its type's value wherever it is "
    "found): customer_name (conditions)",
    "lookup tables / regexes that name no entity (Rasa uses them as classifier features): "
    "declared as slot types that no slot uses yet: lookup 'airline' (data/nlu.yml nlu[22] "
    "(lookup airline)); regex 'zipcode' (data/nlu.yml nlu[24] (regex zipcode))",
    "synonyms whose value no entity has (no annotation, lookup or categorical value): not "
    "imported: 'bitcoin' (data/nlu.yml nlu[19] (synonym bitcoin))",
    "entities typed with Parlance's built-in type of the same name: number",
    "entity roles and groups not imported (a Parlance slot has none; forms tell same-type "
    "slots apart with cues): city role 'departure' (2 annotation(s)); city role "
    "'destination' (2 annotation(s))",
    "metadata of 1 nlu entries not imported",
    "4 intent name(s) changed to lower_snake_case: Check.Balance -> check_balance; book-table "
    "-> book_table; chitchat/ask_name -> chitchat_ask_name; chitchat/ask_age -> "
    "chitchat_ask_age",
    "1 entity name(s) changed to lower_snake_case: phoneNumber -> phone_number",
    "nlu: 1 slot span(s) began or ended with spaces: moved the spaces outside the annotation",
    "nlu: 1 text(s) held line breaks, tabs or repeated spaces: collapsed to single spaces",
    "nlu: 1 text(s) appear under more than one intent; the classifier cannot learn both, so "
    "all 2 of their examples were dropped: 'hi' (greet, bot_challenge)",
    "nlu: dropped 1 duplicate training example(s) (same text ignoring case and spacing): greet 1",
    "nlu: dropped 1 intent(s) left without training examples: thank_you",
    "examples of out_of_scope became the pack's out-of-scope examples",
    "retrieval intents imported as their sub-intents: chitchat -> chitchat_ask_name, "
    "chitchat_ask_age",
    "form table_form: ignored_intents not imported",
    "slots filled from an entity of another name take that entity's type: account_type (from "
    "account), num_people (from people)",
    "slots not imported (not filled from an entity or the text, and no form asks for them): "
    "confirmed (bool), mood (any)",
    "slot recipient: required by a form but not declared; typed free_text",
    "out_of_scope -> utter_out_of_scope: became dialogue.yml fallback.rephrase",
    "nlu_fallback -> utter_please_rephrase: became dialogue.yml fallback.capabilities",
    "deny -> utter_deny_ok: became dialogue.yml meta.deny",
    "stop -> utter_stopped: became dialogue.yml meta.cancel",
    "replies without placeholders added, for when the slots are not in the user's text "
    "(review them): check_balance: 'Your balance is 1,234 credits.'",
    "form transfer_form: no utter_ask_recipient response; generated the prompt 'What is the "
    "recipient?'",
    "responses utter_table_booked, utter_anything_else sent in a row: joined into one text",
    "utter_ask_pizza_size: kept the first of 2 variations as the prompt",
    "form pizza_form: no utter_ask_pizza_type response; generated the prompt 'What is the "
    "pizza type?'",
    "form pizza_form: no response after its submission; generated the done text 'Thanks, I "
    "have everything I need.'",
    "form survey_form: no rule or story activates it after an intent; not imported",
    "data/rules.yml rule 'Weather from the action server': custom action(s) "
    "action_check_weather not imported",
    "data/rules.yml rule 'Greet a known customer': conditions on slots are not imported",
    "data/rules.yml rule 'Bot challenge inside the booking form': rules under an active form "
    "are not imported (the gateway answers a digression inside a form by itself, then asks "
    "again)",
    "data/stories.yml story 'greet then ask about the bot': 2 user turns: multi-turn stories "
    "are not imported (its turns: greet -> utter_greet; bot_challenge -> utter_iamabot)",
    "data/stories.yml story 'ends in a checkpoint': checkpoints are not imported",
    "data/stories.yml story 'either yes or no': OR steps are not imported",
    "response parts not imported (Parlance replies are text): utter_greet: buttons (1); "
    "utter_goodbye: image (1); utter_iamabot: conditional or channel-specific variation (1); "
    "utter_fly: conditional or channel-specific variation (1)",
    "responses no imported rule or story uses, not imported: utter_promo, utter_unused",
    "meta intents (dialogue.yml): affirm: affirm, deny: deny, cancel: stop",
]


def test_rasa_notes_say_what_was_not_mapped(rasa):
    assert rasa.notes == RASA_NOTES


def test_rasa_from_a_list_of_files(tmp_path):
    report = import_rasa([RASA / "domain.yml", RASA / "data" / "nlu.yml"], tmp_path / "p")
    no_errors(report)
    assert report.counts["intents"] == 15 and report.counts["test_examples"] == 0
    assert report.counts["forms"] == 0  # no rules or stories: nothing activates a form
    assert load_pack(report.out).name == "rasa_project"


@pytest.mark.parametrize(
    "path, old, new, message",
    [
        (
            "data/nlu.yml",
            "- intent: goodbye\n  examples: |",
            "- intent: goodbye\n  examples: [",
            r"^data/nlu.yml: line \d+: not valid YAML",
        ),
        (
            "data/nlu.yml",
            "    - see you later\n",
            "    see you later\n",
            r"^data/nlu.yml: nlu\[1\] \(intent goodbye\): examples line 3 does not start with "
            r"'- ': 'see you later'$",
        ),
        (
            "data/nlu.yml",
            '[checking account]{"entity": "account", "value": "checking"}',
            '[checking account]{"entity": "account", value: "checking"}',
            r"^data/nlu.yml: nlu\[6\] \(intent Check.Balance\): .*annotation is not valid JSON",
        ),
        (
            "data/rules.yml",
            "- rule: Say hello\n  steps:",
            "- rule: Say hello\n  stepz:",
            r"^data/rules.yml: rules\[0\] \(Say hello\): needs a list of steps$",
        ),
        (
            "domain.yml",
            "  utter_unused:\n    - text:",
            "  utter_unused:\n    text:",
            None,
        ),
    ],
)
def test_rasa_bad_input_names_file_and_entry(tmp_path, path, old, new, message):
    src = tmp_path / "project"
    shutil.copytree(RASA, src)
    text = (src / path).read_text()
    assert old in text
    (src / path).write_text(text.replace(old, new, 1))
    if message is None:  # an unused response is not read, so its shape does not matter
        no_errors(import_rasa(src, tmp_path / "out"))
        return
    with pytest.raises(PackImportError, match=message):
        import_rasa(src, tmp_path / "out")


def test_rasa_missing_data(tmp_path):
    with pytest.raises(PackImportError, match="not a directory"):
        import_rasa(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "p").mkdir()
    with pytest.raises(PackImportError, match=r"p/data: not found"):
        import_rasa(tmp_path / "p", tmp_path / "out")
    (tmp_path / "p" / "data").mkdir()
    (tmp_path / "p" / "data" / "rules.yml").write_text("rules: []\n")
    with pytest.raises(PackImportError, match="no NLU training data"):
        import_rasa(tmp_path / "p", tmp_path / "out")
    with pytest.raises(PackImportError, match="missing.yml: file not found"):
        import_rasa([tmp_path / "missing.yml"], tmp_path / "out")


# ----------------------------------------------------------------- CSV and JSONL

MESSY_CSV = (
    "text,intent,split\r\n"
    "  hello  ,greet,train\r\n"
    "hi,greet,\r\n"
    "Hi,greet,train\r\n"
    "good morning,greet,test\r\n"
    "hey there,greet,validation\r\n"
    ",greet,train\r\n"
    "   ,greet,\r\n"
    "bye,Say Goodbye,train\r\n"
    "see you,Say Goodbye,train\r\n"
    "hello,Say Goodbye,train\r\n"
    "what caf\xe9 is open,find.Cafe,train\r\n"
    "is the caf\xe9 “open”,find.Cafe,train\r\n"
    '"a caf\xe9\nnear me",find.Cafe,test\r\n'
    "buy a car,oos,train\r\n"
    "\r\n"
    "sell my soul,OOS,test\r\n"
    "lonely,empty_intent,train\r\n"
    "lonely,Say Goodbye,train\r\n"
    "cheerio,,train\r\n"
)


def test_messy_csv(tmp_path):
    src = tmp_path / "export.csv"
    src.write_bytes(MESSY_CSV.encode("cp1252"))
    report = import_table(src, tmp_path / "pack")
    assert report.notes == [
        "export.csv: not UTF-8 (byte 231); decoded as cp1252 (Windows Western European)",
        "export.csv: skipped 1 blank line(s)",
        "export.csv: dropped 2 row(s) with an empty text (line(s) 7, 8)",
        "export.csv: dropped 1 row(s) without an intent (line(s) 21)",
        "export.csv: 1 validation row(s) kept as training examples (the pack holds out "
        "validation_share of each intent itself)",
        "2 intent name(s) changed to lower_snake_case: Say Goodbye -> say_goodbye; find.Cafe "
        "-> find_cafe",
        "export.csv: 1 text(s) held line breaks, tabs or repeated spaces: collapsed to single "
        "spaces",
        "export.csv: 2 text(s) appear under more than one intent; the classifier cannot learn "
        "both, so all 4 of their examples were dropped: 'hello' (greet, say_goodbye); 'lonely' "
        "(empty_intent, say_goodbye)",
        "export.csv: dropped 1 duplicate training example(s) (same text ignoring case and "
        "spacing): greet 1",
        "export.csv: dropped 1 intent(s) left without training examples: empty_intent",
    ]
    assert report.counts == {
        "intents": 3,
        "examples": 6,
        "test_examples": 2,
        "out_of_scope_examples": 1,
        "out_of_scope_test_examples": 1,
        "slots": 0,
        "forms": 0,
        "responses": 0,
    }
    no_errors(report)
    pack = load_pack(report.out)
    assert pack.name == "export"
    assert pack.intents["greet"].examples == ["hi", "hey there"]
    assert pack.intents["greet"].test_examples == ["good morning"]
    assert pack.intents["find_cafe"].examples == ["what café is open", "is the café “open”"]
    assert pack.intents["find_cafe"].test_examples == ["a café near me"]
    assert pack.intents_file.out_of_scope.examples == ["buy a car"]
    assert pack.intents_file.out_of_scope.test_examples == ["sell my soul"]


def test_csv_text_that_reads_as_markup_and_latin1(tmp_path):
    src = tmp_path / "t.csv"
    rows = "text,intent\npress [ok](button) now,ui\nopen the \x81 menu,ui\n"
    src.write_bytes(rows.encode("latin-1"))
    report = import_table(src, tmp_path / "pack", name="ui-test")
    assert report.notes[0] == "t.csv: not UTF-8 (byte 47); decoded as Latin-1"
    assert (
        "t.csv: 1 example(s) had brackets that would read as markup: replaced '[' ']' "
        "with '(' ')'" in report.notes
    )
    no_errors(report)
    pack = load_pack(report.out)
    assert pack.name == "ui-test"
    assert pack.intents["ui"].examples == ["press (ok)(button) now", "open the \x81 menu"]


def test_jsonl(tmp_path):
    src = tmp_path / "data.jsonl"
    lines = [
        {"text": "book a table", "intent": "BookTable"},
        {"text": "Book a table ", "intent": "BookTable"},
        {"text": "a table for two", "intent": "BookTable", "split": "train"},
        {"text": "table tonight?", "intent": "BookTable", "split": "test"},
        {"text": "what's the weather", "intent": "weather"},
        {"text": "is it raining", "intent": "weather", "split": "dev"},
        {"text": "sing me a song", "intent": "out_of_scope"},
    ]
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8-sig")
    report = import_table(src, tmp_path / "pack")
    assert report.notes == [
        "data.jsonl: skipped 1 blank line(s)",
        "data.jsonl: 1 validation row(s) kept as training examples (the pack holds out "
        "validation_share of each intent itself)",
        "1 intent name(s) changed to lower_snake_case: BookTable -> book_table",
        "data.jsonl: dropped 1 duplicate training example(s) (same text ignoring case and "
        "spacing): book_table 1",
    ]
    no_errors(report)
    pack = load_pack(report.out)
    assert pack.intents["book_table"].examples == ["book a table", "a table for two"]
    assert pack.intents["book_table"].test_examples == ["table tonight?"]
    assert pack.intents_file.out_of_scope.examples == ["sing me a song"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("a.csv", "text,label\nhi,greet\n", r"^a.csv: line 1: the header needs columns"),
        (
            "a.csv",
            "text,intent\nhi,greet\nhello\n",
            r"^a.csv: line 3: 1 field\(s\) where the "
            r"header has 2: missing column 'intent'$",
        ),
        ("a.csv", "text,intent\n\nhi,greet\nhi,greet,x\n", r"^a.csv: line 4: 3 field\(s\)"),
        ("a.csv", "text,intent,split\nhi,greet,holdout\n", r"^a.csv: line 2: split 'holdout'"),
        ("a.csv", "", r"^a.csv: empty: no header row$"),
        ("a.csv", "text,intent\n ,greet\n", r"^a.csv: no intent has examples left to import$"),
        (
            "b.jsonl",
            '{"text": "hi", "intent": "greet"}\n{"text": "yo"',
            r"^b.jsonl: line 2: not "
            r"valid JSON",
        ),
        ("b.jsonl", '{"text": "hi"}\n', r"^b.jsonl: line 1: no 'intent' key"),
        ("b.jsonl", '["hi", "greet"]\n', r"^b.jsonl: line 1: each line must be a JSON object$"),
        ("b.jsonl", '{"text": ["hi"], "intent": "x"}\n', r"^b.jsonl: line 1: 'text' must be"),
    ],
)
def test_table_bad_input_names_file_and_line(tmp_path, name, content, message):
    src = tmp_path / name
    src.write_text(content)
    with pytest.raises(PackImportError, match=message):
        import_table(src, tmp_path / "pack")
    assert not (tmp_path / "pack").exists()


def test_table_missing_file_and_occupied_output(tmp_path):
    with pytest.raises(PackImportError, match="nope.csv: file not found"):
        import_table(tmp_path / "nope.csv", tmp_path / "pack")
    src = tmp_path / "a.csv"
    src.write_text("text,intent\nhi,greet\n")
    (tmp_path / "pack").mkdir()
    (tmp_path / "pack" / "notes.txt").write_text("mine")
    with pytest.raises(PackImportError, match=r"pack: not empty: pass overwrite=True"):
        import_table(src, tmp_path / "pack")
    report = import_table(src, tmp_path / "pack", overwrite=True)
    assert report.counts["examples"] == 1
    assert (tmp_path / "pack" / "notes.txt").read_text() == "mine"  # not a pack file: kept


# ----------------------------------------------------------------- CLINC150

CLINC_INTENTS = ["todo_list", "reminder", "yes", "no", "balance", "greeting"]


@pytest.fixture(scope="module")
def clinc_subset(tmp_path_factory) -> Path:
    """A few real CLINC150 intents (with two that share a text) in the oos-eval layout."""
    full = json.loads((clinc_source() / "data_full.json").read_text())
    out = tmp_path_factory.mktemp("clinc")
    doc = {
        k: v[:40] if k.startswith("oos") else
        [p for p in v if p[1] in CLINC_INTENTS]
        for k, v in full.items()
    }  # fmt: skip
    (out / "data_full.json").write_text(json.dumps(doc))
    domains = json.loads((clinc_source() / "domains.json").read_text())
    kept = {d: [i for i in v if i in CLINC_INTENTS] for d, v in domains.items()}
    (out / "domains.json").write_text(json.dumps({d: v for d, v in kept.items() if v}))
    return out


def test_clinc150(clinc_subset, tmp_path):
    report = import_clinc150(clinc_subset, tmp_path / "pack")
    doc = json.loads((clinc_subset / "data_full.json").read_text())
    n = {k: len(v) for k, v in doc.items()}
    assert report.counts == {
        "intents": 6,
        # 'what is on my to do list' is in two intents, one greeting is there twice
        "examples": n["train"] + n["val"] - 3,
        "test_examples": n["test"],
        "out_of_scope_examples": n["oos_train"] + n["oos_val"],
        "out_of_scope_test_examples": n["oos_test"],
        "slots": 0,
        "forms": 0,
        "responses": 0,
    }
    assert report.notes == [
        f"data_full.json: the {n['val']} val and {n['oos_val']} oos_val examples are kept as "
        "examples (the pack holds out validation_share of each intent itself)",
        "data_full.json: 1 text(s) appear under more than one intent; the classifier cannot "
        "learn both, so all 2 of their examples were dropped: 'what is on my to do list' "
        "(todo_list, reminder)",
        "data_full.json: dropped 1 duplicate training example(s) (same text ignoring case and "
        "spacing): greeting 1",
        "meta intents (dialogue.yml): affirm: yes, deny: no",
    ]
    no_errors(report)
    pack = load_pack(report.out)
    assert pack.name == clinc_subset.name
    assert pack.assistant.examples_from is None  # self-contained
    assert sorted(pack.intents) == sorted(CLINC_INTENTS)
    assert pack.intents["balance"].description == "banking"
    assert pack.dialogue.meta_intents.affirm == ["yes"]
    assert "'yes':" in (report.out / "intents.yml").read_text()  # quoted, not a boolean
    train = [t for t, i in doc["train"] if i == "balance"]
    assert pack.intents["balance"].examples[: len(train)] == train


def test_clinc150_variant_and_bad_input(clinc_subset, tmp_path):
    with pytest.raises(PackImportError, match=r"data_small.json.*not found"):
        import_clinc150(clinc_subset, tmp_path / "pack", variant="small")
    with pytest.raises(PackImportError, match="unknown variant"):
        import_clinc150(clinc_subset, tmp_path / "pack", variant="huge")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "data_full.json").write_text(json.dumps({"train": [["hi"]]}))
    with pytest.raises(PackImportError, match=r"train\[0\] is not a \[text, intent\] pair"):
        import_clinc150(bad, tmp_path / "pack")


def test_written_files_are_plain_yaml(rasa):
    """Every written file is safe-loadable YAML with a header saying where it came from."""
    for path in sorted(rasa.out.glob("*.yml")):
        text = path.read_text()
        assert text.startswith("# Imported from the Rasa project rasa_project")
        assert isinstance(yaml.safe_load(text), dict)
        assert not re.search(r"\[\s*'", text)  # no flow-style lists
