"""CLINC150 loading from the oos-eval directory and from a hub-format dataset on disk."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write_clinc_json
from training.data import OOS, DataError, load_clinc, load_from_dir, load_from_hub


def tiny_splits():
    return {
        "train": [
            ["what is my balance", "balance"],
            ["set a timer", "timer"],
            ["how much money do i have", "balance"],
        ],
        "val": [["balance please", "balance"], ["timer for 5 minutes", "timer"]],
        "test": [["check my balance", "balance"], ["start a timer", "timer"]],
        "oos_train": [["who won the game", "oos"]],
        "oos_val": [["tell me about mars", "oos"]],
        "oos_test": [["what is the dow", "oos"]],
    }


def test_full_variant_sizes_and_labels(clinc_path):
    data = load_from_dir(clinc_path, "full")
    assert len(data.labels) == 151 and data.labels[-1] == OOS
    assert data.labels[:-1] == sorted(data.labels[:-1])
    assert (len(data.train), len(data.val), len(data.test)) == (15100, 3100, 5500)
    assert (data.train.n_oos, data.val.n_oos, data.test.n_oos) == (100, 100, 1000)
    assert len(data.domains) == 10
    assert data.checksum.startswith("sha256:")


def test_plus_variant_has_250_oos_and_same_eval_splits(clinc_path):
    full = load_from_dir(clinc_path, "full")
    plus = load_from_dir(clinc_path, "plus")
    assert plus.train.n_oos == 250
    assert plus.val.texts == full.val.texts and plus.test.texts == full.test.texts
    assert plus.labels == full.labels
    assert plus.checksum != full.checksum


def test_env_var_is_used(clinc_path, monkeypatch):
    monkeypatch.setenv("CLINC150_DIR", str(clinc_path))
    assert len(load_clinc(None, "small").train) == 7500 + 100


def test_missing_directory_is_clear(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_from_dir(tmp_path / "nope", "full")


def test_missing_variant_file_is_clear(tmp_path):
    with pytest.raises(DataError, match="data_small.json not found"):
        load_from_dir(tmp_path, "small")


def test_unknown_variant(tmp_path):
    with pytest.raises(DataError, match="unknown variant"):
        load_from_dir(tmp_path, "huge")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s.pop("val"), "'val' missing"),
        (
            lambda s: s.__setitem__("train", [["only text"]]),
            r"train\[0\] is not a \[text, intent\]",
        ),
        (lambda s: s.__setitem__("oos_val", [["x", "balance"]]), "labels other than 'oos'"),
        (lambda s: s.__setitem__("test", []) or s.__setitem__("oos_test", []), "'test' is empty"),
        (lambda s: s.__setitem__("oos_train", []), "no out-of-scope"),
        (lambda s: s["test"].append(["play music", "play_music"]), "never seen in train"),
    ],
)
def test_malformed_files_are_rejected(tmp_path, mutate, message):
    splits = tiny_splits()
    mutate(splits)
    write_clinc_json(tmp_path, splits)
    with pytest.raises(DataError, match=message):
        load_from_dir(tmp_path, "full")


def test_invalid_json_is_rejected(tmp_path):
    (tmp_path / "data_full.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid UTF-8 JSON"):
        load_from_dir(tmp_path, "full")
    (tmp_path / "data_full.json").write_bytes(b'\xff\xfe{"a": 1}')
    with pytest.raises(DataError, match="not valid UTF-8 JSON"):
        load_from_dir(tmp_path, "full")
    (tmp_path / "data_full.json").write_text(json.dumps([1, 2]))
    with pytest.raises(DataError, match="expected a JSON object"):
        load_from_dir(tmp_path, "full")


def write_hub_copy(root, splits, config="plus"):
    """A local dataset in the hub's `clinc_oos` schema: text + intent (ClassLabel, int ids)."""
    import datasets

    # The hub's label order is not ours: shuffle the names to prove labels travel by name.
    names = sorted({i for rows in splits.values() for _, i in rows}, reverse=True)
    features = datasets.Features(
        {"text": datasets.Value("string"), "intent": datasets.ClassLabel(names=names)}
    )
    for ours, theirs in (("train", "train"), ("val", "validation"), ("test", "test")):
        rows = splits[ours] + splits[f"oos_{ours}"]
        ds = datasets.Dataset.from_dict(
            {"text": [t for t, _ in rows], "intent": [names.index(i) for _, i in rows]},
            features=features,
        )
        (root / config).mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(root / config / f"{theirs}-00000-of-00001.parquet"))
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: "
        + config
        + "\n  data_files:\n"
        + "".join(
            f"  - split: {s}\n    path: {config}/{s}-*\n" for s in ("train", "validation", "test")
        )
        + "---\n"
    )


def test_hub_schema_gives_the_same_data_as_the_directory(tmp_path):
    splits = tiny_splits()
    write_clinc_json(tmp_path / "dir", splits, "data_oos_plus.json")
    write_hub_copy(tmp_path / "hub", splits)
    from_dir = load_from_dir(tmp_path / "dir", "plus")
    from_hub = load_from_hub("plus", name=str(tmp_path / "hub"))
    assert from_hub.labels == from_dir.labels == ["balance", "timer", "oos"]
    for split in ("train", "val", "test"):
        assert from_hub.split(split).texts == from_dir.split(split).texts
        assert from_hub.split(split).intents == from_dir.split(split).intents
    assert from_hub.checksum == from_dir.checksum
    assert from_hub.source.startswith("hub:")
    assert len(from_hub.domains) == 10  # the packaged copy of domains.json


def test_two_local_hub_copies_of_the_same_name_each_load_their_own_rows(tmp_path):
    """datasets caches a local copy by folder name: a second copy must not read the first."""
    splits = tiny_splits()
    write_hub_copy(tmp_path / "a" / "hub", splits)
    more = {k: v * (2 if k == "train" else 1) for k, v in splits.items()}
    write_hub_copy(tmp_path / "b" / "hub", more)
    first = load_from_hub("plus", name=str(tmp_path / "a" / "hub"))
    second = load_from_hub("plus", name=str(tmp_path / "b" / "hub"))
    assert len(first.train) == len(splits["train"]) + len(splits["oos_train"])
    assert len(second.train) == 2 * len(splits["train"]) + len(splits["oos_train"])


def test_hub_has_no_full_config():
    with pytest.raises(DataError, match="use 'plus'"):
        load_from_hub("full")


def test_unreachable_hub_dataset_is_clear(tmp_path):
    with pytest.raises(DataError, match="CLINC150_DIR"):
        load_from_hub("plus", name=str(tmp_path / "missing"))


def test_restrict_keeps_oos_and_caps(clinc_path):
    data = load_from_dir(clinc_path, "full").restrict(["balance", "timer"], max_per_intent=5)
    assert data.labels == ["balance", "timer", "oos"]
    assert len(data.train) == 15
    with pytest.raises(DataError, match="unknown intents"):
        load_from_dir(clinc_path, "full").restrict(["not_an_intent"])
