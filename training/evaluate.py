"""Evaluate a classifier artifact on CLINC150 exactly as the service runs it.

    python -m training.evaluate --artifact OUT [--data-dir DIR] [--backend onnx|onnx-int8|torch]

Loads the artifact through the service's own backend and decision rule (`services.classifier`),
so the figures are those of the served model. Writes `OUT/eval/` (or `--report-dir`): a JSON
report with every metric for val and test, the reliability diagram and the confusion matrix of
the worst intents as PNG.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from services.classifier.artifact import EVAL_DIR, ClassifierArtifact
from services.classifier.backends import KINDS, forward_batched, load_backend, run_batched
from services.classifier.tagging import bio_tags, decode, snap_to_words
from training.data import ClincData, load_pack_data
from training.metrics import band_report, by_length, classification_report, reliability_bins

logger = logging.getLogger("training.evaluate")


def evaluate_artifact(
    artifact_dir: str | Path,
    data: ClincData,
    backend: str = "onnx",
    splits: tuple[str, ...] = ("val", "test"),
) -> dict:
    art = ClassifierArtifact.load(artifact_dir)
    if data.labels != art.labels:
        raise ValueError("the data's label set differs from the artifact's labels")
    scorer = art.scorer()
    be = load_backend(art, backend)
    out: dict = {
        "backend": be.name,
        "ood": art.manifest["ood"]["score"],
        "threshold": art.manifest["oos_threshold"],
    }
    tags = bio_tags(art.slots) if art.slots else []
    for name in splits:
        split = data.split(name)
        y = np.array([data.label2id[i] for i in split.intents])
        logits, feats, tagging = run_batched(be, split.texts)
        p = scorer.predict(logits, feats)
        report = classification_report(
            y, p["pred"], p["argmax"], p["confidence"], p["score"], data.labels, data.domains
        )
        report["reliability"] = reliability_bins(p["confidence"], p["argmax"] == y)
        oos_index = data.labels.index("oos")
        report["by_length"] = by_length(split.texts, y, p["pred"], p["argmax"], oos_index)
        if scorer.confirm_threshold is not None:
            report["band"] = band_report(y, p["argmax"], p["oos"], p["borderline"], oos_index)
        if tagging is not None and split.spans is not None:
            from training.slot_tagging import slot_report

            predicted = [
                snap_to_words(text, decode(lg, words, tags))
                for text, (lg, words) in zip(split.texts, tagging, strict=True)
            ]
            slots = slot_report(split.texts, split.spans, predicted, p["pred"] == y)
            report.update({k: v for k, v in slots.items() if k != "per_slot"})
            report["per_slot"] = slots["per_slot"]
            out[f"_spans_{name}"] = predicted
        out[name] = report
        if name == "test":
            out["_pred"], out["_y"] = p["pred"], y
    return out


def training_data(
    art: ClassifierArtifact, pack, data_dir: str | None = None, variant: str | None = None
) -> ClincData:
    """The pack's data as the artifact was trained on it: the same held-out validation
    split (its seed), background set and variant (unless given), and for a tagger trained
    on silver annotations the same annotations (its slot figures: agreement with the
    rules)."""
    manifest = art.manifest
    data = load_pack_data(
        pack,
        data_dir,
        variant or manifest.get("data", {}).get("variant", "full"),
        seed=int(manifest.get("training", {}).get("args", {}).get("seed", 42)),
        background=bool(manifest.get("data", {}).get("background")),
    )
    if art.slot_annotations == "silver":
        from training.slot_tagging import silver_annotate

        data = silver_annotate(data, pack)
    return data


def evaluation_data(
    art: ClassifierArtifact,
    pack: str | None = None,
    data_dir: str | None = None,
    variant: str | None = None,
):
    """(pack, data) an artifact is evaluated on: its pack (the manifest's, unless named),
    the data as the artifact was trained on it (`training_data`), restricted to its labels
    when it was trained on a subset of intents (tests, smoke runs)."""
    from parlance.pack import load_pack

    loaded = load_pack(pack or (art.manifest.get("pack") or {}).get("name", "clinc150"))
    data = training_data(art, loaded, data_dir, variant)
    if data.labels != art.labels:
        data = data.restrict([x for x in art.labels if x != "oos"])
    return loaded, data


def refit_band(artifact_dir: str | Path, data: ClincData, share: float, backend: str) -> dict:
    """Choose the borderline band again on the validation split (training.calibration
    .choose_band) and record it in the artifact's manifest: a band for an artifact trained
    before bands existed, or another share, without retraining."""
    from training.calibration import choose_band

    art = ClassifierArtifact.load(artifact_dir)
    scorer = art.scorer()
    be = load_backend(art, backend)
    y = np.array([data.label2id[i] for i in data.val.intents])
    logits, feats = forward_batched(be, data.val.texts)
    band = choose_band(
        scorer.scores(logits, feats),
        logits.argmax(-1),
        y,
        data.labels.index("oos"),
        scorer.threshold,
        share,
    )
    path = Path(artifact_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["ood"]["confirm_threshold"] = band["confirm_threshold"]
    manifest["ood"]["band"] = band
    path.write_text(json.dumps(manifest, indent=2))
    logger.info("borderline band chosen on val: %s", json.dumps(band))
    return band


def fit_slot_policy(artifact_dir: str | Path, report: dict, data: ClincData, pack) -> dict:
    """Which slots the gateway leaves to the tagger (training.slot_tagging
    .slots_left_to_tagger, on val), recorded in the artifact's manifest."""
    from training.slot_tagging import slots_left_to_tagger

    art = ClassifierArtifact.load(artifact_dir)
    policy = slots_left_to_tagger(pack, data.val, report["_spans_val"], art.slots, data.train)
    path = Path(artifact_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["slot_policy"] = policy
    path.write_text(json.dumps(manifest, indent=2))
    logger.info("slots left to the tagger (val): %s", policy["left_to_tagger"])
    return policy


def write_report(
    out_dir: str | Path, report: dict, labels: list[str], report_dir: str | Path | None = None
) -> Path:
    report_dir = Path(report_dir) if report_dir else Path(out_dir) / EVAL_DIR
    report_dir.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    (report_dir / "report.json").write_text(json.dumps(public, indent=2))
    if "_pred" in report:
        from training.plots import plot_confusion_worst, plot_reliability

        plot_reliability(
            report["test"]["reliability"], report_dir / "reliability.png", ece=report["test"]["ece"]
        )
        plot_confusion_worst(
            report["_y"], report["_pred"], labels, report_dir / "confusion_worst.png"
        )
    return report_dir


def with_oos_probes(data: ClincData) -> ClincData:
    """The data with CLINC150's 1,000 out-of-scope test queries added to its test split."""
    from training.data import OOS, load_clinc

    probes = load_clinc(None, "full").test
    texts = [t for t, i in zip(probes.texts, probes.intents, strict=True) if i == OOS]
    data.test = data.test.extended(texts, OOS)
    data.source += "+clinc150-oos-test-probes"
    return data


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", required=True, help="classifier artifact directory")
    parser.add_argument(
        "--pack", default=None, help="pack directory or bundled name (default: the artifact's pack)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="oos-eval JSON directory (default $CLINC150_DIR, else the hub)",
    )
    parser.add_argument("--variant", default=None, help="default: the one the model saw")
    parser.add_argument("--backend", default="onnx", choices=KINDS)
    parser.add_argument("--report-dir", default=None, help="default: ARTIFACT/eval")
    parser.add_argument(
        "--oos-probes",
        default=None,
        choices=["clinc150"],
        help="add CLINC150's out-of-scope test queries to the test split as "
        "out-of-scope probes (a pack without out-of-scope test data; "
        "CLINC150 from $CLINC150_DIR or the hub)",
    )
    parser.add_argument(
        "--fit-band",
        type=float,
        default=None,
        metavar="SHARE",
        help="first choose the borderline band again on val (at most SHARE of val "
        "out-of-scope queries in it; 0 removes it) and write it into the artifact's manifest",
    )
    parser.add_argument(
        "--fit-slot-policy",
        action="store_true",
        help="a joint model: choose again on val which slots the gateway leaves to the "
        "tagger, and write it into the artifact's manifest",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO,
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    art = ClassifierArtifact.load(args.artifact)
    pack, data = evaluation_data(art, args.pack, args.data_dir, args.variant)
    if args.fit_band is not None:
        refit_band(args.artifact, data, args.fit_band, args.backend)
    if args.oos_probes:
        data = with_oos_probes(data)
    report = evaluate_artifact(args.artifact, data, args.backend)
    if args.fit_slot_policy:
        fit_slot_policy(args.artifact, report, data, pack)
    path = write_report(args.artifact, report, data.labels, args.report_dir)
    summary = {k: v for k, v in report["test"].items() if not isinstance(v, dict | list)}
    logger.info("test (%s): %s", report["backend"], json.dumps(summary, indent=2))
    logger.info("report written to %s", path)
    return report


if __name__ == "__main__":
    main()
