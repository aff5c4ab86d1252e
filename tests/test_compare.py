"""`parlance evaluate --compare OLD NEW` (training.compare): the gate's rules on hand-made
reports, the refusal of artifacts with other labels, and two real bike-shop classifiers, a
reasonable one and a deliberately worse one, compared both ways."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from parlance.cli import main as parlance_main
from tests.conftest import clinc_dir
from tests.flags import flags
from training.compare import (
    GATE_RULES,
    Limits,
    compare_reports,
    main,
    per_intent,
    render,
)

ROOT = Path(__file__).resolve().parents[1]
BIKE_SHOP = ROOT / "assistants" / "bike_shop"


def report(
    inscope: float = 0.90,
    oos_recall: float = 0.90,
    accuracy: float = 0.90,
    ece: float = 0.03,
    slot_f1: float | None = None,
    reviewed: float | None = None,
    intents: dict[str, tuple[float, int]] | None = None,
) -> dict:
    """A report as training.compare.evaluate returns it, with only the figures the gate
    reads. `intents`: name -> (test recall, support)."""
    test = {
        "inscope_accuracy": inscope,
        "oos_recall": oos_recall,
        "accuracy": accuracy,
        "macro_f1": accuracy,
        "ece": ece,
        "per_intent": {
            name: {"recall": recall, "precision": recall, "f1": recall, "support": support}
            for name, (recall, support) in (intents or {"balance": (0.9, 30)}).items()
        },
    }
    if slot_f1 is not None:
        test["slot_f1"] = slot_f1
    out = {"test": test, "artifact": "A", "version": "v"}
    if reviewed is not None:
        out["reviewed"] = {"accuracy": reviewed}
    return out


def checks_by_rule(comparison: dict) -> dict:
    return {c.rule: c for c in comparison["gate"]}


def failed(comparison: dict) -> set[str]:
    return {c.rule for c in comparison["gate"] if c.failed}


# ---------------------------------------------------------------- the gate, by hand


def test_identical_reports_are_promoted_with_zero_deltas():
    base = report(slot_f1=0.8, reviewed=0.85)
    comparison = compare_reports(base, base)
    assert comparison["verdict"] == "promote"
    assert failed(comparison) == set()
    assert all(r["delta_points"] == 0 for r in comparison["metrics"])
    assert {r["metric"] for r in comparison["metrics"]} >= {"slot F1", "reviewed held-out accuracy"}
    assert all(c.status == "pass" for c in comparison["gate"])


def test_inscope_drop_beyond_the_limit_refuses_and_at_the_limit_passes():
    old = report(inscope=0.900)
    assert failed(compare_reports(old, report(inscope=0.894))) == {"inscope_accuracy"}
    # exactly 0.5 points is allowed (the limit is "more than")
    assert failed(compare_reports(old, report(inscope=0.895))) == set()
    # an improvement never fails
    assert failed(compare_reports(old, report(inscope=0.95))) == set()
    check = checks_by_rule(compare_reports(old, report(inscope=0.88)))["inscope_accuracy"]
    assert check.worsening == pytest.approx(2.0)
    assert (check.old, check.new, check.limit) == (0.9, 0.88, 0.5)


def test_each_metric_rule_uses_its_own_limit():
    old = report(slot_f1=0.80, reviewed=0.90)
    cases = {
        "oos_recall": report(oos_recall=0.885, slot_f1=0.80, reviewed=0.90),
        "slot_f1": report(slot_f1=0.785, reviewed=0.90),
        "ece": report(ece=0.055, slot_f1=0.80, reviewed=0.90),
        "reviewed_accuracy": report(slot_f1=0.80, reviewed=0.885),
    }
    for rule, new in cases.items():
        assert failed(compare_reports(old, new)) == {rule}, rule
    # the same drops within looser limits pass
    loose = Limits(max_oos_recall_drop=2, max_slot_f1_drop=2, max_ece_rise=3, max_reviewed_drop=2)
    for new in cases.values():
        assert compare_reports(old, new, loose)["verdict"] == "promote"


def test_calibration_is_lower_is_better():
    old = report(ece=0.05)
    assert failed(compare_reports(old, report(ece=0.01))) == set()  # better calibrated
    check = checks_by_rule(compare_reports(old, report(ece=0.08)))["ece"]
    assert check.failed and check.worsening == pytest.approx(3.0)


def test_rules_without_figures_do_not_block():
    """No out-of-scope test queries (NaN recall), no tagger in OLD, no reviewed examples."""
    old = report(oos_recall=math.nan)
    new = report(oos_recall=math.nan, slot_f1=0.5)
    comparison = compare_reports(old, new)
    checks = checks_by_rule(comparison)
    assert comparison["verdict"] == "promote"
    assert checks["oos_recall"].status == "n/a"
    assert "out-of-scope" in checks["oos_recall"].note
    assert checks["slot_f1"].status == "n/a" and checks["slot_f1"].note.startswith("OLD: ")
    assert checks["reviewed_accuracy"].status == "n/a"
    # the figure one side has is still shown, without a delta
    slot_row = next(r for r in comparison["metrics"] if r["key"] == "slot_f1")
    assert slot_row["old"] is None and slot_row["new"] == 0.5 and slot_row["delta_points"] is None
    assert not any(r["key"] == "oos_recall" for r in comparison["metrics"])


def test_one_intent_losing_recall_refuses_only_with_enough_examples():
    old = report(intents={"balance": (0.95, 30), "timer": (0.90, 12), "alarm": (1.0, 5)})
    # aggregates unchanged; timer (12 examples) loses 25 points, alarm (5) loses 60
    new = report(intents={"balance": (0.95, 30), "timer": (0.65, 12), "alarm": (0.4, 5)})
    check = checks_by_rule(compare_reports(old, new))["intent_recall"]
    assert check.failed
    assert [f["intent"] for f in check.failures] == ["timer"]
    assert check.failures[0]["drop_points"] == pytest.approx(25.0)
    assert check.worsening == pytest.approx(25.0)
    # counting intents with 5 examples too, alarm is the worst
    check = checks_by_rule(compare_reports(old, new, Limits(min_intent_support=5)))["intent_recall"]
    assert [f["intent"] for f in check.failures] == ["alarm", "timer"]
    # a looser limit lets timer's 25 points through
    assert compare_reports(old, new, Limits(max_intent_recall_drop=30))["verdict"] == "promote"
    # no intent with 100 examples: the rule does not apply
    check = checks_by_rule(compare_reports(old, new, Limits(min_intent_support=100)))[
        "intent_recall"
    ]
    assert check.status == "n/a"


def test_intents_are_listed_worst_first():
    old = report(intents={"a": (1.0, 10), "b": (1.0, 10), "c": (0.5, 10)})
    new = report(intents={"a": (0.9, 10), "b": (0.5, 10), "c": (0.7, 10)})
    rows = compare_reports(old, new)["intents"]
    assert [r["intent"] for r in rows] == ["b", "a", "c"]
    assert [round(r["recall_delta_points"], 6) for r in rows] == [-50.0, -10.0, 20.0]


def test_the_printed_comparison_ends_with_the_verdict_and_explains_a_refusal():
    old = report(inscope=0.90, ece=0.03, intents={"timer": (0.9, 20)})
    new = report(inscope=0.85, ece=0.031, intents={"timer": (0.6, 20)})
    comparison = compare_reports(old, new)
    text = render(comparison, old, new)
    lines = text.splitlines()
    assert lines[-1] == "verdict: REFUSED - 2 of 6 rules failed: inscope_accuracy, intent_recall"
    inscope = next(x for x in lines if x.startswith("in-scope accuracy drop"))
    assert inscope.split()[3:7] == ["0.50", "+5.00", "FAIL", "90.00"]
    assert "85.00" in inscope
    assert any(x.strip().startswith("timer (20 ex.)") and "+30.00" in x for x in lines)
    # the side-by-side table: OLD, NEW, delta in points
    row = next(x for x in lines if x.startswith("in-scope accuracy ") and "test" in x)
    assert row.split()[-3:] == ["90.00", "85.00", "-5.00"]
    promoted = render(compare_reports(old, old), old, old).splitlines()[-1]
    assert promoted.startswith("verdict: PROMOTE - no rule failed")


def test_the_gate_is_a_registry_with_a_flag_per_limit():
    assert len({r.name for r in GATE_RULES}) == len(GATE_RULES)
    import argparse

    from training.compare import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert Limits.from_args(parser.parse_args(["old", "new"])) == Limits()
    args = parser.parse_args(["old", "new", "--max-inscope-drop", "2", "--min-intent-support", "3"])
    assert Limits.from_args(args) == Limits(max_inscope_drop=2.0, min_intent_support=3)


def test_per_intent_counts_a_rejected_query_as_a_miss():
    labels = ["a", "b", "oos"]
    y = np.array([0, 0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 2, 1, 1, 1, 2])  # one "a" rejected, one confused with "b"
    figures = per_intent(y, pred, labels)
    assert set(figures) == {"a", "b"}  # out of scope has a rule of its own
    assert figures["a"]["recall"] == 0.5 and figures["a"]["support"] == 4
    assert figures["b"]["recall"] == 1.0 and figures["b"]["precision"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------- other label lists


def fake_artifact(directory: Path, labels: list[str]) -> Path:
    directory.mkdir(parents=True)
    manifest = {
        "kind": "classifier",
        "labels": labels,
        "oos_threshold": 0.5,
        "temperature": 1.0,
        "ood": {"score": "msp"},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def test_artifacts_with_other_labels_are_not_compared(tmp_path, capsys):
    old = fake_artifact(tmp_path / "old", ["balance", "timer", "oos"])
    new = fake_artifact(tmp_path / "new", ["balance", "weather", "oos"])
    assert main([str(old), str(new)]) == 2
    message = capsys.readouterr().err
    assert str(old) in message and str(new) in message
    assert f"only in OLD {old}: timer" in message and f"only in NEW {new}: weather" in message
    # the same through `parlance evaluate --compare`
    assert parlance_main(["evaluate", "--compare", str(old), str(new)]) == 2
    assert "their label lists differ" in capsys.readouterr().err


def test_parlance_evaluate_wants_an_artifact_or_compare(capsys):
    assert parlance_main(["evaluate"]) == 2
    assert parlance_main(["evaluate", "x", "--compare", "a", "b"]) == 2
    assert parlance_main(["evaluate", "x", "--max-inscope-drop", "3"]) == 2
    assert "need --compare" in capsys.readouterr().err


# ---------------------------------------------------------------- two real classifiers

# Held-out reviewed traffic for the bike shop (reviewed.yml test_examples): new phrasings,
# so the reviewed figure is not the test split again.
REVIEWED = {
    "intents": {
        "opening_hours": {"test_examples": ["are you guys open on sunday mornings"]},
        "book_repair": {"test_examples": ["i need someone to look at my wobbly back wheel"]},
        "rent_bike": {"test_examples": ["could i hire an e-bike for the weekend"]},
        "shop_location": {"test_examples": ["whats the address of the shop"]},
        "payment_methods": {"test_examples": ["do you take apple pay"]},
        "greet": {"test_examples": ["hiya there"]},
        "thanks": {"test_examples": ["cheers, that helped a lot"]},
        "flat_tire_help": {"test_examples": ["my inner tube burst on the ride home, help"]},
    },
    "out_of_scope": {"test_examples": ["what's the capital of peru", "play some jazz"]},
}


def train(out: Path, **overrides) -> Path:
    from training import classifier

    options = dict(
        pack=str(BIKE_SHOP),
        output_dir=out,
        min_train_steps=0,
        num_train_epochs=4,
        learning_rate="2e-4",
        per_device_train_batch_size=16,
        seed=13,
        soup_runs=1,
        disable_tqdm=True,
    )
    classifier.main(flags(**{**options, **overrides}))
    return out


@pytest.fixture(scope="module")
def bike_pair(tmp_path_factory) -> dict[str, Path]:
    """A reasonable bike-shop classifier (4 epochs, about a minute on 2 cores), one trained
    on 8 examples per intent for 2 epochs, and the pack with reviewed traffic held out."""
    root = tmp_path_factory.mktemp("compare")
    pack = root / "bike_shop"
    shutil.copytree(BIKE_SHOP, pack)
    (pack / "reviewed.yml").write_text(yaml.safe_dump(REVIEWED))
    return {
        "good": train(root / "good"),
        "worse": train(root / "worse", num_train_epochs=2, max_train_per_intent=8),
        "pack": pack,
    }


@pytest.fixture
def clinc_env(monkeypatch) -> dict[str, str]:
    """--oos-probes reads CLINC150's out-of-scope test queries from $CLINC150_DIR: the
    bike shop has no out-of-scope test data of its own."""
    monkeypatch.setenv("CLINC150_DIR", str(clinc_dir()))
    return {**os.environ}


def common_flags(pair: dict, json_path: Path) -> list[str]:
    # The bike shop has 6 test examples per intent: the intent rule counts those.
    return [
        "--pack",
        str(pair["pack"]),
        "--oos-probes",
        "clinc150",
        "--min-intent-support",
        "5",
        "--json",
        str(json_path),
    ]


@pytest.mark.slow
def test_a_worse_model_is_refused(bike_pair, clinc_env, tmp_path, capsys):
    out = tmp_path / "compare.json"
    rc = main([str(bike_pair["good"]), str(bike_pair["worse"]), *common_flags(bike_pair, out)])
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert rc == 1 and doc["verdict"] == "refuse"
    rows = {(r["split"], r["key"]): r for r in doc["metrics"]}
    inscope = rows[("test", "inscope_accuracy")]
    assert inscope["delta_points"] == pytest.approx(100 * (inscope["new"] - inscope["old"]))
    assert inscope["delta_points"] < -0.5
    # the figures are those of the two artifacts on the same data: the good one's in-scope
    # accuracy is its own manifest's (oos probes add only out-of-scope queries)
    manifest = json.loads((bike_pair["good"] / "manifest.json").read_text())
    assert inscope["old"] == pytest.approx(manifest["metrics"]["inscope_accuracy"])
    assert doc["data"]["sizes"] == {"test": 157 + 1000, "test out of scope": 1000, "reviewed": 10}
    assert ("reviewed", "accuracy") in rows and ("test", "slot_f1") in rows
    gate = {c["rule"]: c for c in doc["gate"]}
    assert {"inscope_accuracy", "oos_recall"} <= {
        r for r, c in gate.items() if c["status"] == "FAIL"
    }
    lines = printed.strip().splitlines()
    assert lines[-1].startswith("verdict: REFUSED")
    assert "inscope_accuracy" in lines[-1]
    failed_line = next(x for x in lines if x.startswith("in-scope accuracy drop"))
    assert "FAIL" in failed_line and f"{gate['inscope_accuracy']['worsening']:+.2f}" in failed_line
    # every other limit loosened to 100 points: in-scope accuracy alone still refuses
    loose = [
        f"--{flag}=100"
        for flag in ("max-oos-recall-drop", "max-slot-f1-drop", "max-ece-rise")
        + ("max-reviewed-drop", "max-intent-recall-drop")
    ]
    rc = main(
        [str(bike_pair["good"]), str(bike_pair["worse"]), *common_flags(bike_pair, out), *loose]
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 1 and last == "verdict: REFUSED - 1 of 6 rules failed: inscope_accuracy"
    sys.stdout.write(printed)  # the first table, shown by pytest -rP


@pytest.mark.slow
def test_a_model_against_itself_is_promoted(bike_pair, clinc_env, tmp_path):
    """Through the `parlance` command, as a release script would run it."""
    out = tmp_path / "compare.json"
    good = str(bike_pair["good"])
    r = subprocess.run(
        [sys.executable, "-m", "parlance.cli", "evaluate", "--compare", good, good]
        + common_flags(bike_pair, out),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=clinc_env,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sys.stdout.write(r.stdout)  # shown by pytest -rP
    assert r.stdout.strip().splitlines()[-1].startswith("verdict: PROMOTE - no rule failed")
    doc = json.loads(out.read_text())
    assert doc["verdict"] == "promote"
    assert all(row["delta_points"] == 0 for row in doc["metrics"])
    assert all(row["recall_delta_points"] == 0 for row in doc["intents"])
    assert {c["status"] for c in doc["gate"]} == {"pass"}  # every rule measured, none failed
