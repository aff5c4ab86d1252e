"""Compare out-of-scope scores and threshold rules on one trained artifact.

    python -m training.ood_study --artifact OUT [--data-dir DIR] [--targets 0.95,0.96,0.97]

For every score (msp, energy, maha, knn, msp_maha) and every threshold rule/target, the
threshold is fitted on val exactly as training does, then applied to test. The table is the
evidence in docs/results.md for the artifact's default score and rule; test figures are
reported, never used to choose anything in training.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from services.classifier.artifact import ClassifierArtifact
from services.classifier.backends import forward_batched, load_backend
from services.classifier.scoring import SCORES, Scorer
from training.calibration import decision_curve, pick_threshold
from training.data import OOS, load_clinc
from training.metrics import auroc


def study(
    artifact_dir: str, data_dir: str | None, targets: list[float], backend: str = "onnx"
) -> list[dict]:
    art = ClassifierArtifact.load(artifact_dir)
    data = load_clinc(data_dir, art.manifest["data"].get("variant", "full"))
    if data.labels != art.labels:
        data = data.restrict([x for x in art.labels if x != OOS])
    be = load_backend(art, backend)
    outs = {s: forward_batched(be, data.split(s).texts) for s in ("val", "test")}
    ys = {s: np.array([data.label2id[i] for i in data.split(s).intents]) for s in ("val", "test")}
    oos = data.labels.index(OOS)
    # The statistics and constants training fitted and stored: every score is computed
    # exactly as the service would compute it, without refitting on the training split.
    scorer = Scorer(
        labels=data.labels,
        temperature=art.manifest["temperature"],
        stats=art.feature_stats(),
        combo=dict(art.manifest["ood"].get("combo") or {}),
    )
    rows = []
    for score in SCORES:
        sv = scorer.scores(*outs["val"], score)
        st = scorer.scores(*outs["test"], score)
        av, at = outs["val"][0].argmax(-1), outs["test"][0].argmax(-1)
        base = {
            "score": score,
            "val_auroc": auroc(sv, ys["val"] != oos),
            "test_auroc": auroc(st, ys["test"] != oos),
        }
        _, acc, rec = decision_curve(st, at, ys["test"], oos)
        rules = [("inscope_accuracy", t) for t in targets] + [
            ("oos_recall", 0.95),
            ("balanced", 0.0),
        ]
        for rule, target in rules:
            choice = pick_threshold(sv, av, ys["val"], oos, rule=rule, target=target)
            rejected = st < choice["threshold"]
            inscope = ys["test"] != oos
            test_acc = float(((at == ys["test"]) & ~rejected & inscope).sum() / inscope.sum())
            test_rec = float((((at == oos) | rejected) & ~inscope).sum() / (~inscope).sum())
            # best achievable on test at >= 95 % in-scope (an oracle bound, for context only)
            ok = acc >= 0.95
            oracle = float(rec[ok].max()) if ok.any() else 0.0
            rows.append(
                {
                    **base,
                    "rule": rule,
                    "target": target,
                    "val_inscope": choice["val_inscope_accuracy"],
                    "val_recall": choice["val_oos_recall"],
                    "test_inscope": test_acc,
                    "test_recall": test_rec,
                    "oracle_recall_at_95": oracle,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--targets", default="0.95,0.955,0.96,0.965,0.97")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = p.parse_args(argv)
    rows = study(args.artifact, args.data_dir, [float(t) for t in args.targets.split(",")])
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        return
    header = (
        "| score | val AUROC | test AUROC | rule | target | val in-scope | val recall "
        "| test in-scope | test recall | test recall at 95 % (oracle) |"
    )
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['score']} | {r['val_auroc']:.4f} | {r['test_auroc']:.4f} | "
            f"{r['rule']} | {r['target']} | {r['val_inscope']:.2%} | "
            f"{r['val_recall']:.2%} | {r['test_inscope']:.2%} | {r['test_recall']:.2%}"
            f" | {r['oracle_recall_at_95']:.2%} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
