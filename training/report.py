"""Print a classifier artifact's evaluation as a short human-readable report.

python -m training.report ARTIFACT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from services.classifier.artifact import EVAL_DIR, ClassifierArtifact


def format_report(artifact_dir: str | Path) -> str:
    art = ClassifierArtifact.load(artifact_dir)
    m = art.manifest
    t = m["metrics"]
    ood = m["ood"]
    lines = [
        f"Classifier artifact {art.path} ({m['version']})",
        f"  base model   {m['base_model']} ({m['preset']} preset, {m.get('method', '?')})",
        f"  data         {m['data']['source']} ({m['data']['checksum'][:19]}...)",
        f"  trained in   {m['training']['seconds']:.0f} s on {m['training']['device']}",
        f"  out-of-scope score {ood['score']!r}, threshold {m['oos_threshold']:.4g} "
        f"(rule {ood.get('rule')} @ {ood.get('target')}), temperature {m['temperature']:.3f}",
        "",
        "Test split (Larson et al. 2019 metrics, threshold chosen on val only):",
        f"  in-scope accuracy   {t['inscope_accuracy']:.2%}   "
        f"(argmax {t['argmax_inscope_accuracy']:.2%})",
        f"  OOS recall          {t['oos_recall']:.2%}   (argmax {t['argmax_oos_recall']:.2%})",
        f"  OOS precision       {t['oos_precision']:.2%}",
        f"  OOS AUROC           {t['oos_auroc']:.4f}",
        f"  macro-F1            {t['macro_f1']:.4f}",
        f"  ECE                 {t['ece']:.4f}",
        "",
        "Backends on test (in-scope acc / OOS recall / agreement with torch):",
    ]
    for name, b in m.get("backends", {}).items():
        lines.append(
            f"  {name:10s} {b['inscope_accuracy']:.2%} / {b['oos_recall']:.2%} / "
            f"{b.get('agreement_with_torch', 1.0):.2%}"
        )
    report = art.path / EVAL_DIR / "report.json"
    if report.is_file():
        test = json.loads(report.read_text())["test"]
        if test.get("domain_accuracy"):
            lines += ["", "Accuracy per domain (test):"]
            lines += [f"  {d:20s} {a:.2%}" for d, a in sorted(test["domain_accuracy"].items())]
        lines += ["", "Most confused pairs (test):"]
        lines += [
            f"  {p['count']:3d}  {p['true']} -> {p['predicted']}"
            for p in test["confused_pairs"][:10]
        ]
        lines += [
            "",
            f"Plots: {art.path / EVAL_DIR / 'reliability.png'}, "
            f"{art.path / EVAL_DIR / 'confusion_worst.png'}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python -m training.report ARTIFACT_DIR")
    sys.stdout.write(format_report(argv[0]) + "\n")


if __name__ == "__main__":
    main()
