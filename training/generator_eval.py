"""Re-evaluate a generator artifact on its test examples, as the service would run it.

    python -m training.generator_eval --artifact OUT [--num-beams 4] [--quantize int8]
                                      [--backend auto|onnx|onnx-int8|torch]

The test examples are rebuilt from CLINC150 with the artifact's own data arguments and seed
(and their checksum compared with the manifest's), so a changed check or decoding setting
can be measured without retraining. Prints the report as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from services.generator.model import BACKENDS, MANIFEST, read_manifest
from training.data import load_pack_data
from training.generator import GenerationArguments, evaluate_artifact, write_test_replies
from training.response_data import build_examples


def write_evaluation(artifact: str, manifest: dict, report: dict, test, results) -> None:
    manifest["evaluation"] = report
    manifest["metrics"] = report["model"]
    (Path(artifact) / MANIFEST).write_text(json.dumps(manifest, indent=2))
    write_test_replies(Path(artifact), test, results)


def artifact_examples(artifact: str, data_dir: str | None = None) -> tuple[dict, dict]:
    """(manifest, {split: examples}) rebuilt as the artifact was trained."""
    manifest = read_manifest(artifact)
    targs = manifest["training"]["args"]
    from services.generator.model import load_domain

    pack = load_domain(artifact).pack  # the artifact's own copy of its pack
    data = load_pack_data(
        pack,
        data_dir or targs.get("data_dir"),
        targs.get("variant"),
        targs.get("hub_dataset", "clinc_oos"),
        targs["seed"],
        background=False,
    )
    intents = {x.strip() for x in targs["intents"].split(",")} if targs.get("intents") else None
    caps = {
        "train": targs.get("max_train_per_intent"),
        "val": targs.get("max_eval_per_intent"),
        "test": targs.get("max_eval_per_intent"),
    }
    examples = build_examples(
        data,
        pack,
        seed=targs["seed"],
        intents=intents,
        max_per_intent={k: v for k, v in caps.items() if v},
    )
    return manifest, examples


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifact", required=True)
    p.add_argument("--data-dir", default=None, help="CLINC150 directory (default: as trained)")
    p.add_argument("--num-beams", type=int, default=None)
    p.add_argument("--quantize", default="none", choices=["none", "int8"])
    p.add_argument(
        "--compact-vocabulary",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="narrow a bert2bert decoder to the templates' tokens (as served)",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="the ONNX decoder or torch generate (auto: as the service chooses)",
    )
    p.add_argument("--latency-samples", type=int, default=40)
    p.add_argument(
        "--write",
        action="store_true",
        help="store the report as the manifest's evaluation (default settings only)",
    )
    args = p.parse_args(argv)
    manifest, examples = artifact_examples(args.artifact, args.data_dir)
    gargs = GenerationArguments(
        num_beams=args.num_beams or manifest["generation"]["num_beams"],
        latency_samples=args.latency_samples,
    )
    report = evaluate_artifact(
        args.artifact,
        examples["test"],
        gargs,
        args.quantize,
        train_examples=examples["train"],
        compact_vocabulary=args.compact_vocabulary,
        backend=args.backend,
    )
    results = report.pop("_results")
    if args.write:
        if (
            args.num_beams
            or args.quantize != "none"
            or not args.compact_vocabulary
            or args.backend != "auto"
        ):
            p.error("--write stores the artifact's own settings only")
        write_evaluation(args.artifact, manifest, report, examples["test"], results)
    report["settings"] = {
        "num_beams": gargs.num_beams,
        "quantize": args.quantize,
        "compact_vocabulary": args.compact_vocabulary,
        "backend": report["latency"]["backend"],
    }
    from training.response_data import checksum

    report["examples_match_manifest"] = checksum(examples) == manifest["data"].get(
        "examples_checksum"
    )
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return report


if __name__ == "__main__":
    main()
