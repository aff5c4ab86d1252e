"""The core-intent label map: the shipped file is valid, and broken files fail clearly."""

from __future__ import annotations

import pytest
import yaml

from services.common.label_map import (
    DEFAULT_PATH,
    LabelMapError,
    clinc_raw_intents,
    load_label_map,
)


def test_shipped_map_is_complete(clinc_path):
    lm = load_label_map()
    assert len(lm.core) == 20 and len(lm.generated) == 10
    # every label a classifier trained on CLINC150 can emit has a core intent
    from training.data import load_from_dir

    labels = load_from_dir(clinc_path, "full").labels
    assert set(labels) == clinc_raw_intents() == set(lm.raw_to_core)
    assert lm.core_of("oos") == "out_of_scope" and not lm.is_generated("out_of_scope")
    assert lm.core_of("yes") == "dialogue_control"
    assert lm.core_of("transfer") == "money_transfer"
    assert lm.is_generated(lm.core_of("calculator"))
    with pytest.raises(LabelMapError, match="not in the label map"):
        lm.core_of("teleport")


def edited(tmp_path, edit):
    doc = yaml.safe_load(DEFAULT_PATH.read_text())
    edit(doc)
    path = tmp_path / "map.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["core_intents"]["small_talk"]["intents"].remove("greeting"),
     "not mapped: greeting"),
    (lambda d: d["core_intents"]["small_talk"]["intents"].append("timer"),
     r"mapped twice: timer \(small_talk and timers_and_alarms\)"),
    (lambda d: d["core_intents"]["small_talk"]["intents"].append("teleport"),
     "unknown raw intents: teleport"),
    (lambda d: d["core_intents"]["account_info"].__setitem__("generated", True),
     "11 core intents marked generated"),
    (lambda d: d["core_intents"]["account_info"].__setitem__("generated", "yes"),
     "'generated' must be true or false"),
    (lambda d: d["core_intents"].pop("games_of_chance"), "19 core intents"),
    (lambda d: d["core_intents"]["dialogue_control"]["intents"].__setitem__(0, True),
     "quote yes/no"),
    (lambda d: d["core_intents"]["small_talk"].__setitem__("description", ""),
     "needs a one-line 'description'"),
    (lambda d: d.__setitem__("version", "one"), "'version' must be an integer"),
])
def test_broken_maps_are_refused_with_a_clear_message(tmp_path, edit, message):
    with pytest.raises(LabelMapError, match=message):
        load_label_map(edited(tmp_path, edit))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(LabelMapError, match="not found"):
        load_label_map(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("core_intents: [unclosed")
    with pytest.raises(LabelMapError, match="not valid YAML"):
        load_label_map(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(LabelMapError, match="expected a mapping"):
        load_label_map(tmp_path / "list.yaml")
