"""Random against length-grouped batches on small data sets, over several seeds: does the
cpu preset's `--train_sampling_strategy group_by_length` (chosen on CLINC150's 15,250
training queries) hold on a pack of a few hundred examples?

    python -m benchmarks.sampling_small --seeds 13,14,15 --output runs/sampling-small.json

Each (data set, seed, strategy) is one `python -m training.classifier` run in its own
process, float32 throughout (`--bf16 false`), so the comparison is the batch order alone and
reads the same on machines with and without bfloat16 instructions. Data sets:

* `fixture`: the tests' 8-intent CLINC150 subset (tests/conftest.py, 40 training queries
  per intent, 3 epochs at batch 16);
* `bike_shop`: the bundled `assistants/bike_shop` pack with its own splits.

Val figures are what a choice may use; test figures are printed for the record.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from training.cli import quiet_libraries

FIXTURE_INTENTS = "balance,transactions,timer,alarm,weather,translate,book_flight,greeting"

DATA_SETS: dict[str, list[str]] = {
    "fixture": (
        f"--variant full --min_train_steps 0 --intents {FIXTURE_INTENTS} "
        "--max_train_per_intent 40 --num_train_epochs 3 --learning_rate 2e-4 "
        "--per_device_train_batch_size 16"
    ).split(),
    "bike_shop": ["--pack", "assistants/bike_shop"],
}
# Short phrasings as users type them, with the intent they mean: the fixture's grouped run
# answered these two out of scope (docs/results.md#training-speed).
PROBES: dict[str, list[tuple[str, str]]] = {
    "fixture": [
        ("book a flight to rome", "book_flight"),
        ("i need a plane ticket to rome", "book_flight"),
        ("what's my balance", "balance"),
        ("set a timer for 5 minutes", "timer"),
        ("wake me up at 7", "alarm"),
        ("will it rain tomorrow", "weather"),
        ("how do you say hello in french", "translate"),
        ("hi there", "greeting"),
    ],
    "bike_shop": [],
}
STRATEGIES = ("random", "group_by_length")


def run_one(data_set: str, seed: int, strategy: str, out: Path) -> dict:
    command = [
        *(sys.executable, "-m", "training.classifier", "--preset", "cpu"),
        *DATA_SETS[data_set],
        *f"--seed {seed} --train_sampling_strategy {strategy} --bf16 false --use_cpu false "
        "--soup_runs 1 --export_onnx false --disable_tqdm true --output-dir".split(),
        str(out),
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    manifest = json.loads((out / "manifest.json").read_text())
    val, test = manifest["val_metrics"], manifest["metrics"]
    probes_right = None
    if PROBES[data_set]:
        from services.classifier.model import ClassifierModel

        model = ClassifierModel(out, "torch")
        answers = model.predict_batch([(text, 1) for text, _ in PROBES[data_set]])
        probes_right = sum(
            a.intent == want for a, (_, want) in zip(answers, PROBES[data_set], strict=True)
        )
    return {
        "data_set": data_set,
        "seed": seed,
        "strategy": strategy,
        "val_argmax_inscope": val["argmax_inscope_accuracy"],
        "val_inscope": val["inscope_accuracy"],
        "val_oos_recall": val.get("oos_recall"),
        "test_argmax_inscope": test["argmax_inscope_accuracy"],
        "test_inscope": test["inscope_accuracy"],
        "test_oos_recall": test.get("oos_recall"),
        "probes_right": probes_right,
        "train_seconds": manifest["training"]["seconds"],
    }


def summary(rows: list[dict]) -> str:
    keys = ["val_argmax_inscope", "val_inscope", "test_argmax_inscope", "test_inscope"]
    lines = [
        "| data set | strategy | runs | " + " | ".join(keys) + " | probes right | train s |",
        "|---|---|---|" + "---|" * (len(keys) + 2),
    ]
    for data_set in dict.fromkeys(r["data_set"] for r in rows):
        for strategy in STRATEGIES:
            mine = [r for r in rows if r["data_set"] == data_set and r["strategy"] == strategy]
            if not mine:
                continue
            cells = []
            for key in keys:
                values = [100 * r[key] for r in mine]
                spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
                cells.append(f"{statistics.mean(values):.2f}{spread}")
            seconds = statistics.mean(r["train_seconds"] for r in mine)
            probes = (
                f"{sum(r['probes_right'] for r in mine)} / {len(mine) * len(PROBES[data_set])}"
                if PROBES[data_set]
                else "-"
            )
            lines.append(
                f"| {data_set} | {strategy} | {len(mine)} | "
                + " | ".join(cells)
                + f" | {probes} | {seconds:.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-sets", default=",".join(DATA_SETS))
    parser.add_argument("--seeds", default="13,14,15")
    parser.add_argument("--output", type=Path, help="JSON file for every run's figures")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries()  # the probes load each model here: no weight-loading bars
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for data_set in args.data_sets.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                for strategy in STRATEGIES:  # interleaved: a slow moment falls on both
                    row = run_one(
                        data_set, seed, strategy, Path(tmp) / f"{data_set}-{seed}-{strategy}"
                    )
                    rows.append(row)
                    print(
                        f"{data_set} seed {seed} {strategy}: val argmax "
                        f"{row['val_argmax_inscope']:.2%}, test {row['test_inscope']:.2%} "
                        f"({row['train_seconds']:.0f} s)",
                        flush=True,
                    )
                    if args.output:
                        args.output.parent.mkdir(parents=True, exist_ok=True)
                        args.output.write_text(json.dumps(rows, indent=2))
    print(summary(rows))


if __name__ == "__main__":
    main()
