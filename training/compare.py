"""Compare two classifier artifacts on the same data, and gate the promotion of the new one.

    python -m training.compare OLD NEW [--pack P] [--data-dir DIR] [--backend onnx|onnx-int8|torch]
        [--oos-probes clinc150] [--json FILE] [gate flags: --help]

Both artifacts are evaluated as the service runs them (`training.evaluate.evaluate_artifact`)
on NEW's pack as NEW was trained on it: its test split, and the pack's reviewed held-out
examples (reviewed.yml `test_examples`) when it has any. Prints, side by side with the
change in points, in-scope accuracy, out-of-scope recall, overall accuracy, macro F1,
calibration error (ECE), slot F1 (when both tag slots), accuracy on the reviewed examples,
and the intents whose recall fell most; then the gate, one rule per line, and a verdict.

Exit status: 0 promote NEW, 1 NEW refused (the failed rules and their numbers are printed
above the verdict), 2 the two cannot be compared (other label lists, no test data).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Protocol

# Only the standard library at module level: `parlance`'s parser imports `add_arguments`
# from here, and `parlance init` must not pay for numpy, ONNX Runtime or torch.


class IncomparableArtifacts(ValueError):
    """The two artifacts cannot be compared on the same data."""


# ---------------------------------------------------------------- figures


@dataclass(frozen=True)
class Metric:
    """One figure of an evaluation report, shown side by side for OLD and NEW."""

    key: str  # the key in the split's report (training.metrics.classification_report)
    split: str
    title: str
    higher_is_better: bool = True
    missing: str = "not measured"  # why a report may lack it

    def value(self, report: dict) -> float | None:
        """The figure as a fraction, or None where the report has none (or NaN: a split
        without out-of-scope queries has no out-of-scope recall)."""
        found = (report.get(self.split) or {}).get(self.key)
        if found is None or (isinstance(found, float) and math.isnan(found)):
            return None
        return float(found)


INSCOPE = Metric("inscope_accuracy", "test", "in-scope accuracy")
OOS_RECALL = Metric(
    "oos_recall",
    "test",
    "OOS recall",
    missing="no out-of-scope test queries (--oos-probes clinc150 adds some)",
)
ACCURACY = Metric("accuracy", "test", "overall accuracy")
MACRO_F1 = Metric("macro_f1", "test", "macro F1")
ECE = Metric("ece", "test", "calibration error (ECE)", higher_is_better=False)
SLOT_F1 = Metric("slot_f1", "test", "slot F1", missing="no slot tagger")
REVIEWED = Metric(
    "accuracy", "reviewed", "reviewed held-out accuracy", missing="the pack has no reviewed.yml"
)
METRICS = (INSCOPE, OOS_RECALL, ACCURACY, MACRO_F1, ECE, SLOT_F1, REVIEWED)


def points(fraction: float) -> float:
    return 100.0 * fraction


def metric_rows(old: dict, new: dict) -> list[dict]:
    """Every figure that at least one side has, with NEW - OLD in points."""
    rows = []
    for metric in METRICS:
        a, b = metric.value(old), metric.value(new)
        if a is None and b is None:
            continue
        rows.append(
            {
                "metric": metric.title,
                "key": metric.key,
                "split": metric.split,
                "higher_is_better": metric.higher_is_better,
                "old": a,
                "new": b,
                "delta_points": None if a is None or b is None else points(b - a),
            }
        )
    return rows


def per_intent(y_true, y_pred, labels: list[str]) -> dict[str, dict]:
    """Recall, precision, F1 and support of every in-scope intent with test examples (the
    final decision, threshold applied: an intent's query rejected as out of scope is a
    miss). Out-of-scope recall has a rule of its own."""
    import numpy as np
    from sklearn.metrics import precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(labels))), zero_division=0
    )
    return {
        name: {
            "recall": float(recall[i]),
            "precision": float(precision[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(labels)
        if name != "oos" and support[i] > 0
    }


def intent_rows(old: dict, new: dict) -> list[dict]:
    """Per-intent recall and F1 of both, the largest fall in recall first."""
    old_intents = old["test"].get("per_intent", {})
    new_intents = new["test"].get("per_intent", {})
    rows = [
        {
            "intent": name,
            "support": new_intents[name]["support"],
            "old_recall": old_intents[name]["recall"],
            "new_recall": new_intents[name]["recall"],
            "recall_delta_points": points(
                new_intents[name]["recall"] - old_intents[name]["recall"]
            ),
            "old_f1": old_intents[name]["f1"],
            "new_f1": new_intents[name]["f1"],
            "f1_delta_points": points(new_intents[name]["f1"] - old_intents[name]["f1"]),
        }
        for name in new_intents
        if name in old_intents
    ]
    return sorted(
        rows, key=lambda r: (r["recall_delta_points"], r["f1_delta_points"], -r["support"])
    )


# ---------------------------------------------------------------- the gate


@dataclass(frozen=True)
class Limits:
    """How much worse NEW may be than OLD, in points, before it is refused. Each field is a
    flag of its own (`--max-inscope-drop 1.0`)."""

    max_inscope_drop: float = field(
        default=0.5, metadata={"help": "refuse when test in-scope accuracy falls by more than this"}
    )
    max_oos_recall_drop: float = field(
        default=1.0,
        metadata={"help": "refuse when test out-of-scope recall falls by more than this"},
    )
    max_slot_f1_drop: float = field(
        default=1.0,
        metadata={"help": "refuse when test slot F1 falls by more than this (when both tag slots)"},
    )
    max_ece_rise: float = field(
        default=2.0,
        metadata={"help": "refuse when test expected calibration error rises by more than this"},
    )
    max_reviewed_drop: float = field(
        default=1.0,
        metadata={
            "help": "refuse when accuracy on the pack's reviewed held-out examples falls by more "
            "than this"
        },
    )
    max_intent_recall_drop: float = field(
        default=10.0,
        metadata={"help": "refuse when any one intent's test recall falls by more than this ..."},
    )
    min_intent_support: int = field(
        default=10,
        metadata={
            "help": "... among the intents with at least this many test examples (a count, "
            "not points: fewer make one query a large share)"
        },
    )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Limits:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Check:
    """One rule's outcome. `worsening` is in points, positive when NEW is worse."""

    rule: str
    title: str
    status: str  # "pass", "FAIL" or "n/a"
    limit: float
    worsening: float | None = None
    old: float | None = None
    new: float | None = None
    note: str = ""  # what was measured, or why the rule did not apply
    failures: list[dict] = field(default_factory=list)  # per intent, for the intent rule

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


# Floating-point slack: the same artifact evaluated twice gives identical figures, but a
# worsening computed as a difference of fractions times 100 should not fail a limit it
# meets exactly.
_EPSILON = 1e-9


def _status(worsening: float, limit: float) -> str:
    return "FAIL" if worsening > limit + _EPSILON else "pass"


@dataclass(frozen=True)
class MetricRule:
    """NEW may be worse than OLD on one figure by at most `Limits.<limit>` points."""

    name: str
    metric: Metric
    limit: str  # the Limits field

    @property
    def title(self) -> str:
        return f"{self.metric.title} {'drop' if self.metric.higher_is_better else 'rise'}"

    def check(self, old: dict, new: dict, limits: Limits) -> Check:
        allowed = getattr(limits, self.limit)
        a, b = self.metric.value(old), self.metric.value(new)
        if a is None or b is None:
            # name the side that lacks the figure when only one does
            which = "" if a is None and b is None else ("OLD: " if a is None else "NEW: ")
            note = which + self.metric.missing
            return Check(self.name, self.title, "n/a", allowed, old=a, new=b, note=note)
        worsening = points(a - b) if self.metric.higher_is_better else points(b - a)
        return Check(
            self.name,
            self.title,
            _status(worsening, allowed),
            allowed,
            worsening,
            a,
            b,
            note=f"{points(a):.2f} -> {points(b):.2f}",
        )


@dataclass(frozen=True)
class IntentRecallRule:
    """No intent with enough test examples to measure it may lose more than
    `Limits.max_intent_recall_drop` points of recall: an aggregate that holds can hide one
    intent that stopped working."""

    name: str = "intent_recall"
    title: str = "worst intent recall drop"

    def check(self, old: dict, new: dict, limits: Limits) -> Check:
        allowed = limits.max_intent_recall_drop
        measured = [r for r in intent_rows(old, new) if r["support"] >= limits.min_intent_support]
        if not measured:
            return Check(
                self.name,
                self.title,
                "n/a",
                allowed,
                note=f"no intent has {limits.min_intent_support} test examples",
            )
        worst = measured[0]  # intent_rows sorts the largest fall first
        worsening = points(worst["old_recall"] - worst["new_recall"])
        failures = [
            {
                "intent": r["intent"],
                "support": r["support"],
                "old_recall": r["old_recall"],
                "new_recall": r["new_recall"],
                "drop_points": points(r["old_recall"] - r["new_recall"]),
            }
            for r in measured
            if _status(points(r["old_recall"] - r["new_recall"]), allowed) == "FAIL"
        ]
        return Check(
            self.name,
            self.title,
            "FAIL" if failures else "pass",
            allowed,
            worsening,
            worst["old_recall"],
            worst["new_recall"],
            note=f"{worst['intent']} ({worst['support']} ex.), "
            f"{len(measured)} intents with >= {limits.min_intent_support}",
            failures=failures,
        )


class Rule(Protocol):
    """What the gate asks of a rule: MetricRule and IntentRecallRule are two; a new rule is
    one more entry in GATE_RULES (and a Limits field for its flag)."""

    name: str

    def check(self, old: dict, new: dict, limits: Limits) -> Check: ...


GATE_RULES: tuple[Rule, ...] = (
    MetricRule("inscope_accuracy", INSCOPE, "max_inscope_drop"),
    MetricRule("oos_recall", OOS_RECALL, "max_oos_recall_drop"),
    MetricRule("slot_f1", SLOT_F1, "max_slot_f1_drop"),
    MetricRule("ece", ECE, "max_ece_rise"),
    MetricRule("reviewed_accuracy", REVIEWED, "max_reviewed_drop"),
    IntentRecallRule(),
)


def run_gate(old: dict, new: dict, limits: Limits, rules: Sequence = GATE_RULES) -> list[Check]:
    """Every rule's check of NEW against OLD. NEW is promoted when none failed; a rule that
    cannot be measured (no slots, no reviewed examples) does not block."""
    return [rule.check(old, new, limits) for rule in rules]


def compare_reports(old: dict, new: dict, limits: Limits | None = None) -> dict:
    """The comparison of two reports (evaluate_artifact's, with per-intent figures under
    `test.per_intent`): table rows, the gate's checks and the verdict."""
    limits = limits or Limits()
    checks = run_gate(old, new, limits)
    return {
        "metrics": metric_rows(old, new),
        "intents": intent_rows(old, new),
        "limits": asdict(limits),
        "gate": checks,
        "verdict": "refuse" if any(c.failed for c in checks) else "promote",
    }


# ---------------------------------------------------------------- evaluation


def _label_difference(old_dir, old_labels: list[str], new_dir, new_labels: list[str]) -> str:
    only_old = [x for x in old_labels if x not in new_labels]
    only_new = [x for x in new_labels if x not in old_labels]
    if not only_old and not only_new:
        return (
            f"cannot compare {old_dir} and {new_dir}: the same labels in another order "
            "(a different head layout); retrain one of them"
        )
    parts = []
    if only_old:
        parts.append(f"only in OLD {old_dir}: {', '.join(only_old)}")
    if only_new:
        parts.append(f"only in NEW {new_dir}: {', '.join(only_new)}")
    return (
        f"cannot compare {old_dir} and {new_dir}: their label lists differ ("
        + "; ".join(parts)
        + "). A comparison of different label sets is meaningless."
    )


def comparison_data(
    old_dir: str | Path,
    new_dir: str | Path,
    pack: str | None = None,
    data_dir: str | None = None,
    oos_probes: str | None = None,
):
    """NEW's data as NEW was trained on it (training.evaluate.training_data), restricted to
    its labels when it was trained on a subset; IncomparableArtifacts when OLD's labels
    differ."""
    from services.classifier.artifact import ClassifierArtifact
    from training.evaluate import evaluation_data, with_oos_probes

    old_art, new_art = ClassifierArtifact.load(old_dir), ClassifierArtifact.load(new_dir)
    if old_art.labels != new_art.labels:
        raise IncomparableArtifacts(
            _label_difference(old_dir, old_art.labels, new_dir, new_art.labels)
        )
    _, data = evaluation_data(new_art, pack, data_dir)
    if oos_probes:
        data = with_oos_probes(data)
    if len(data.test) == 0:
        raise IncomparableArtifacts(f"{data.source}: no test examples to compare on")
    return data


def evaluate(artifact_dir: str | Path, data, backend: str = "onnx") -> dict:
    """evaluate_artifact on test (and reviewed, when the data has it), plus per-intent
    figures on test under `test.per_intent`."""
    from services.classifier.artifact import ClassifierArtifact
    from training.evaluate import evaluate_artifact

    splits = ("test",) if data.reviewed is None else ("test", "reviewed")
    raw = evaluate_artifact(artifact_dir, data, backend, splits=splits)
    report = {k: v for k, v in raw.items() if not k.startswith("_")}
    report["test"]["per_intent"] = per_intent(raw["_y"], raw["_pred"], data.labels)
    art = ClassifierArtifact.load(artifact_dir)
    report["artifact"] = str(artifact_dir)
    report["version"] = art.version
    report["slots"] = art.slots
    return report


# ---------------------------------------------------------------- output


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{points(value):.2f}"


def _delta(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: Sequence[int] = (0,)
) -> str:
    """Plain-text columns: names and notes (`text_columns`) left-aligned, numbers
    right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells) -> str:
        out = [
            str(c).ljust(w) if i in text_columns else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def render(comparison: dict, old: dict, new: dict, show_intents: int = 10) -> str:
    """The comparison as text; its last line is the verdict."""
    data = comparison.get("data", {})
    out = [
        f"OLD  {old.get('artifact', '?')}  ({old.get('version', '?')})",
        f"NEW  {new.get('artifact', '?')}  ({new.get('version', '?')})",
    ]
    if data:
        sizes = ", ".join(f"{k} {v}" for k, v in data["sizes"].items())
        out.append(f"data {data['source']}: {sizes}; backend {comparison.get('backend', '?')}")
    out += ["", "figures in %, delta = NEW - OLD in points"]
    rows = [
        [
            r["metric"] + ("" if r["higher_is_better"] else " (lower is better)"),
            r["split"],
            _pct(r["old"]),
            _pct(r["new"]),
            _delta(r["delta_points"]),
        ]
        for r in comparison["metrics"]
    ]
    out.append(table(["metric", "split", "OLD", "NEW", "delta"], rows, text_columns=(0, 1)))

    worse = [r for r in comparison["intents"] if r["recall_delta_points"] < 0][:show_intents]
    out.append("")
    if worse:
        out.append(f"intents whose test recall fell most ({len(worse)} shown)")
        out.append(
            table(
                ["intent", "support", "OLD recall", "NEW recall", "delta", "OLD F1", "NEW F1"],
                [
                    [
                        r["intent"],
                        str(r["support"]),
                        _pct(r["old_recall"]),
                        _pct(r["new_recall"]),
                        _delta(r["recall_delta_points"]),
                        _pct(r["old_f1"]),
                        _pct(r["new_f1"]),
                    ]
                    for r in worse
                ],
            )
        )
    else:
        out.append("no intent's test recall fell")

    checks: list[Check] = comparison["gate"]
    out += ["", "gate (worse = how much NEW is worse than OLD, in points)"]
    gate_rows = []
    for c in checks:
        gate_rows.append(
            [
                c.title,
                f"{c.limit:.2f}",
                "-" if c.worsening is None else f"{c.worsening:+.2f}",
                c.status,
                c.note,
            ]
        )
        for f in c.failures[:show_intents]:
            gate_rows.append(
                [
                    f"  {f['intent']} ({f['support']} ex.)",
                    f"{c.limit:.2f}",
                    f"{f['drop_points']:+.2f}",
                    "FAIL",
                    f"{_pct(f['old_recall'])} -> {_pct(f['new_recall'])}",
                ]
            )
        if len(c.failures) > show_intents:
            more = len(c.failures) - show_intents
            gate_rows.append([f"  ... {more} more (--show-intents, --json)", "", "", "", ""])
    out.append(
        table(["rule", "allowed", "worse", "result", "measured"], gate_rows, text_columns=(0, 3, 4))
    )
    failed = [c.rule for c in checks if c.failed]
    out.append("")
    if failed:
        out.append(
            f"verdict: REFUSED - {len(failed)} of {len(checks)} rules failed: {', '.join(failed)}"
        )
    else:
        skipped = sum(c.status == "n/a" for c in checks)
        out.append(
            f"verdict: PROMOTE - no rule failed ({len(checks) - skipped} checked, "
            f"{skipped} not applicable)"
        )
    return "\n".join(out)


def _plain(value):
    """JSON-safe: NaN as null, checks as dicts."""
    if isinstance(value, Check):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser, artifacts: bool = True) -> None:
    """This command's flags (and OLD NEW when `artifacts`): `parlance evaluate --compare`
    adds the same ones to its own parser."""
    if artifacts:
        parser.add_argument("old", metavar="OLD", help="the artifact in service now")
        parser.add_argument("new", metavar="NEW", help="the candidate artifact")
    parser.add_argument(
        "--pack", default=None, help="pack directory or bundled name (default: NEW's pack)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="oos-eval JSON directory (default $CLINC150_DIR, else the hub)",
    )
    parser.add_argument(
        "--backend",
        default="onnx",
        # services.classifier.backends.KINDS, spelled out: stdlib only at module level
        choices=["onnx", "onnx-int8", "torch", "torch-bf16"],
    )
    parser.add_argument(
        "--oos-probes",
        default=None,
        choices=["clinc150"],
        help="add CLINC150's out-of-scope test queries to the test split (a pack without "
        "out-of-scope test data has no out-of-scope recall to gate on otherwise)",
    )
    parser.add_argument("--json", default=None, metavar="FILE", help="write the comparison")
    parser.add_argument(
        "--show-intents",
        type=int,
        default=10,
        metavar="N",
        help="how many of the intents whose recall fell most to list (default %(default)s)",
    )
    gate = parser.add_argument_group(
        "gate", "NEW is refused (exit 1) when it is worse than OLD by more than any limit"
    )
    for f in fields(Limits):
        gate.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(f.default),
            default=f.default,
            metavar="N" if f.type in (int, "int") else "POINTS",
            help=f.metadata["help"] + " (default %(default)s)",
        )


def run(args: argparse.Namespace) -> int:
    """Compare args.old with args.new as the flags say; the exit status."""
    import logging

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    try:
        data = comparison_data(args.old, args.new, args.pack, args.data_dir, args.oos_probes)
    except IncomparableArtifacts as e:
        sys.stderr.write(f"{e}\n")
        return 2
    old = evaluate(args.old, data, args.backend)
    new = evaluate(args.new, data, args.backend)
    comparison = compare_reports(old, new, Limits.from_args(args))
    sizes = {"test": len(data.test), "test out of scope": data.test.n_oos}
    if data.reviewed is not None:
        sizes["reviewed"] = len(data.reviewed)
    comparison["data"] = {"source": data.source, "checksum": data.checksum, "sizes": sizes}
    comparison["backend"] = old["backend"]
    sys.stdout.write(render(comparison, old, new, args.show_intents) + "\n")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        # the verdict and why first, the two full reports last
        doc = {**comparison, "old": old, "new": new}
        doc = {k: doc[k] for k in ("verdict", "data", "backend", "limits", "gate")} | doc
        path.write_text(json.dumps(_plain(doc), indent=2))
    return 1 if comparison["verdict"] == "refuse" else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Exit status: 0 promote NEW, 1 refused, 2 not comparable.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
