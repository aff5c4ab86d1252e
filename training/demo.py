"""`make demo`: from a fresh checkout to a running stack on the embedded defaults.

    python -m training.demo [--artifacts artifacts] [--data-dir DIR] [--port 8000]

1. Picks the artifacts: the full-quality ones from `make train` (ARTIFACTS/classifier,
   ARTIFACTS/generator) when present, else the lighter `demo`-preset ones
   (ARTIFACTS/demo/...), training those that are missing (about 12 minutes on 2 CPU cores;
   the trainer's progress bar shows the ETA of each stage).
2. Prints what the chosen artifacts measured on the CLINC150 test split.
3. Runs classifier, generator and gateway as local processes (services/local_stack.py),
   prints the chat page URL, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

# Measured on the 2-core reference machine (docs/results.md, "make demo").
DEMO_MINUTES = {"classifier": 6, "generator": 7}


def choose(artifacts: Path, name: str) -> tuple[Path, bool]:
    """(directory, already trained): full quality first, then the demo preset's."""
    full = artifacts / name
    if (full / "manifest.json").is_file():
        return full, True
    demo = artifacts / "demo" / name
    return demo, (demo / "manifest.json").is_file()


def train(name: str, output: Path, data_dir: str | None, step: str) -> float:
    print(f"\n[{step}] training the {name} (demo preset, about {DEMO_MINUTES[name]} min on 2 "
          f"CPU cores; `make train` gives the full-quality one) -> {output}", flush=True)
    from training.train_missing import train as train_preset

    t0 = time.monotonic()
    train_preset(name, "demo", output, data_dir)
    return time.monotonic() - t0


def summary(name: str, path: Path) -> str:
    """One line of test-split quality, from the artifact's manifest."""
    from services.common.files import read_manifest

    m = read_manifest(path, name, ValueError)
    if name == "classifier":
        t = m["metrics"]
        return (f"classifier {m['version']} ({m['preset']} preset): in-scope accuracy "
                f"{t['inscope_accuracy']:.1%}, out-of-scope recall {t['oos_recall']:.1%} "
                f"(CLINC150 test)")
    ev = m["evaluation"]
    return (f"generator  {m['version']} ({m['preset']} preset): exact match "
            f"{ev['model']['template_exact_match']:.1%} (model) / "
            f"{ev['template_baseline']['template_exact_match']:.1%} (templates), slot "
            f"fidelity {ev['served']['slot_fidelity']:.1%} served (CLINC150 test)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifacts", default="artifacts")
    p.add_argument("--data-dir", default=None,
                   help="CLINC150 directory (default: $CLINC150_DIR, else the hub)")
    p.add_argument("--port", type=int, default=8000, help="gateway / chat page port")
    p.add_argument("--classifier-port", type=int, default=8001)
    p.add_argument("--generator-port", type=int, default=8002)
    p.add_argument("--no-serve", action="store_true", help="train and report only")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(sys.stdout)])
    root = Path(args.artifacts)
    chosen = {name: choose(root, name) for name in ("classifier", "generator")}
    missing = [name for name, (_, ok) in chosen.items() if not ok]
    t0 = time.monotonic()
    for i, name in enumerate(missing, 1):
        secs = train(name, chosen[name][0], args.data_dir, f"{i}/{len(missing)}")
        print(f"{name} trained in {secs / 60:.1f} min", flush=True)
    if missing:
        print(f"training took {(time.monotonic() - t0) / 60:.1f} min in all", flush=True)
    print()
    for name, (path, _) in chosen.items():
        print(summary(name, path), flush=True)
    if args.no_serve:
        return 0
    from services.local_stack import Stack, serve_forever

    stack = Stack(chosen["classifier"][0], chosen["generator"][0], port=args.port,
                  classifier_port=args.classifier_port, generator_port=args.generator_port,
                  log_dir=root / "logs")
    return serve_forever(stack)


if __name__ == "__main__":
    sys.exit(main())
