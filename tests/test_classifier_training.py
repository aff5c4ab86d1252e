"""End to end: train the cpu preset on a CLINC150 subset, reload the artifact, evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.classifier.artifact import ArtifactError, ClassifierArtifact
from services.classifier.backends import forward_batched, load_backend
from tests.conftest import SMALL_INTENTS
from tests.flags import flags
from training.data import load_from_dir

pytestmark = pytest.mark.slow


def test_manifest_follows_the_contract(small_artifact):
    m = json.loads((small_artifact / "manifest.json").read_text())
    for key in (
        "kind",
        "base_model",
        "preset",
        "created_at",
        "git_commit",
        "data",
        "metrics",
        "labels",
        "oos_threshold",
        "temperature",
    ):
        assert key in m, key
    assert m["kind"] == "classifier" and m["preset"] == "cpu"
    assert m["labels"] == sorted(SMALL_INTENTS) + ["oos"]
    assert m["data"]["checksum"].startswith("sha256:")
    assert m["temperature"] > 0
    assert {"torch", "onnx", "onnx-int8"} <= set(m["backends"])
    for f in (
        "model/head.safetensors",
        "model/config.json",
        "onnx/model.onnx",
        "onnx/model.int8.onnx",
        "ood_stats.npz",
        "eval/report.json",
        "eval/reliability.png",
        "eval/confusion_worst.png",
    ):
        assert (small_artifact / f).is_file(), f


def test_the_served_weights_are_the_best_on_val_of_the_last_epochs_and_their_means(
    small_artifact,
):
    m = json.loads((small_artifact / "manifest.json").read_text())
    averaging = m["training"]["weight_averaging"]
    val = averaging["val"]
    assert set(val) == {"best epoch", "mean of epochs 2-3", "mean of epochs 1-3"}
    assert val[averaging["chosen"]] == max(val.values())
    # the figures recorded for the artifact are those of the chosen weights
    served = m["training"]["val_argmax"]["eval_accuracy"]
    assert served == pytest.approx(val[averaging["chosen"]], abs=1e-6)


def test_beats_chance_by_a_wide_margin(small_artifact):
    m = json.loads((small_artifact / "manifest.json").read_text())
    # 8 intents + oos: chance is ~11 %. A model that learnt nothing could not pass this.
    assert m["metrics"]["argmax_inscope_accuracy"] >= 0.8
    assert m["metrics"]["oos_auroc"] >= 0.8


def test_torch_and_onnx_give_identical_predictions(small_artifact, clinc_path):
    art = ClassifierArtifact.load(small_artifact)
    data = load_from_dir(clinc_path, "full").restrict(SMALL_INTENTS)
    texts = data.test.texts[:200] + data.test.texts[-100:]
    scorer = art.scorer()
    preds = {}
    outputs = {}
    for kind in ("torch", "onnx"):
        logits, feats = forward_batched(load_backend(art, kind), texts, batch_size=32)
        outputs[kind] = logits
        preds[kind] = scorer.predict(logits, feats)["pred"]
    assert np.array_equal(preds["torch"], preds["onnx"])
    assert np.allclose(outputs["torch"], outputs["onnx"], atol=1e-3)


def test_int8_stays_close(small_artifact):
    m = json.loads((small_artifact / "manifest.json").read_text())
    assert m["backends"]["onnx-int8"]["agreement_with_torch"] >= 0.9


def test_evaluate_cli_reproduces_the_manifest(small_artifact, clinc_path, tmp_path):
    from training import evaluate

    report = evaluate.main(
        [
            "--artifact",
            str(small_artifact),
            "--data-dir",
            str(clinc_path),
            "--report-dir",
            str(tmp_path),
        ]
    )
    m = json.loads((small_artifact / "manifest.json").read_text())
    assert report["test"]["inscope_accuracy"] == pytest.approx(m["metrics"]["inscope_accuracy"])
    assert report["test"]["oos_recall"] == pytest.approx(m["metrics"]["oos_recall"])
    assert (tmp_path / "report.json").is_file()


def test_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="not a classifier artifact"):
        ClassifierArtifact.load(tmp_path)
    (tmp_path / "manifest.json").write_text('{"kind": "generator"}')
    with pytest.raises(ArtifactError, match="not 'classifier'"):
        ClassifierArtifact.load(tmp_path)


def test_cli_trains_from_a_hub_format_dataset(tmp_path, monkeypatch):
    """No --data-dir and no CLINC150_DIR: the CLI takes the hub path (a local copy here)."""
    from tests.test_data import tiny_splits, write_hub_copy
    from training import classifier

    splits = tiny_splits()
    # a few more examples so that a batch and an epoch exist
    for k in ("train", "val", "test"):
        splits[k] = splits[k] * 4
    write_hub_copy(tmp_path / "hub", splits)
    monkeypatch.delenv("CLINC150_DIR", raising=False)
    out = tmp_path / "art"
    m = classifier.main(
        flags(
            preset="cpu",
            hub_dataset=tmp_path / "hub",
            variant="plus",
            min_train_steps=0,
            output_dir=out,
            num_train_epochs=1,
            disable_tqdm=True,
            export_onnx=False,
            per_device_train_batch_size=4,
        )
    )
    assert m["data"]["source"] == f"hub:{tmp_path / 'hub'}/plus"
    assert m["labels"] == ["balance", "timer", "oos"]
    assert (out / "model" / "head.safetensors").is_file()


def test_a_soup_of_runs_from_one_initialisation_with_frozen_word_embeddings(tmp_path, clinc_path):
    """--soup_runs: two runs on different data orders, the served weights chosen on val among
    the best run and their soup; --freeze_word_embeddings leaves the pretrained matrix as it
    was in every run and in the soup."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    from training import classifier

    out = tmp_path / "soup"
    m = classifier.main(
        flags(
            preset="cpu",
            data_dir=clinc_path,
            variant="full",
            min_train_steps=0,
            output_dir=out,
            intents=",".join(SMALL_INTENTS[:4]),
            max_train_per_intent=20,
            num_train_epochs=2,
            average_last_epochs=0,
            soup_runs=2,
            freeze_word_embeddings=True,
            per_device_train_batch_size=16,
            seed=13,
            disable_tqdm=True,
            export_onnx=False,
        )
    )
    soup = m["training"]["soup"]
    assert len(soup["runs_val"]) == 2
    assert soup["chosen"] in soup["val"]
    assert soup["val"][soup["chosen"]] == max(soup["val"].values())
    # the figures recorded for the artifact are those of the chosen weights
    assert m["training"]["val_argmax"]["eval_accuracy"] == pytest.approx(
        soup["val"][soup["chosen"]]
    )
    per_epoch = -(-m["data"]["sizes"]["train"] // 16)
    assert m["training"]["steps"] == 2 * 2 * per_epoch  # 2 runs of 2 epochs
    pretrained = AutoModel.from_pretrained(classifier.resolve_model_path(classifier.OFFLINE_MINILM))
    served = load_file(out / "model" / "model.safetensors")
    embedding = next(k for k in served if k.endswith("word_embeddings.weight"))
    assert np.array_equal(
        served[embedding].numpy(), pretrained.embeddings.word_embeddings.weight.detach().numpy()
    )
    encoder_layer = next(k for k in served if k.endswith("layer.0.attention.self.query.weight"))
    assert not np.array_equal(
        served[encoder_layer].numpy(),
        pretrained.encoder.layer[0].attention.self.query.weight.detach().numpy(),
    )
