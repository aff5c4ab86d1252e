"""`make demo`: from a fresh checkout to a running stack on the embedded defaults.

    python -m training.demo [--pack PACK] [--artifacts artifacts] [--data-dir DIR] [--port 8000]

1. Picks the artifacts: the full-quality ones from `make train` (ARTIFACTS/classifier,
   ARTIFACTS/generator) when present, else the lighter `demo`-preset ones
   (ARTIFACTS/demo/...), training those that are missing (about 12 minutes on 2 CPU cores;
   the trainer's progress bar shows the ETA of each stage).
2. Prints what the chosen artifacts measured on the CLINC150 test split.
3. Runs classifier, generator and gateway as local processes (services/local_stack.py),
   prints the chat page URL, and stops everything on Ctrl-C.

Another pack (`make demo ASSISTANT=assistants/bike_shop`) keeps its artifacts in
ARTIFACTS/packs/<name>/ and trains only the generator when it has generated core intents.
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


def train(
    name: str, output: Path, data_dir: str | None, step: str, pack: str = "clinc150"
) -> float:
    if pack == "clinc150":
        print(
            f"\n[{step}] training the {name} (demo preset, about {DEMO_MINUTES[name]} min "
            f"on 2 CPU cores; `make train` gives the full-quality one) -> {output}",
            flush=True,
        )
    else:
        print(
            f"\n[{step}] training the {name} of pack {pack} (demo preset) -> {output}", flush=True
        )
    from training.train_missing import train as train_preset

    t0 = time.monotonic()
    train_preset(name, "demo", output, data_dir, pack)
    return time.monotonic() - t0


def summary(name: str, path: Path, pack: str = "CLINC150") -> str:
    """One line of test-split quality, from the artifact's manifest."""
    from services.common.files import read_manifest

    m = read_manifest(path, name, ValueError)
    if name == "classifier":
        t = m["metrics"]
        return (
            f"classifier {m['version']} ({m['preset']} preset): in-scope accuracy "
            f"{t['inscope_accuracy']:.1%}, out-of-scope recall {t['oos_recall']:.1%} "
            f"({pack} test)"
        )
    ev = m["evaluation"]
    return (
        f"generator  {m['version']} ({m['preset']} preset): exact match "
        f"{ev['model']['template_exact_match']:.1%} (model) / "
        f"{ev['template_baseline']['template_exact_match']:.1%} (templates), slot "
        f"fidelity {ev['served']['slot_fidelity']:.1%} served ({pack} test)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", default="clinc150", help="assistant pack (directory or bundled name)")
    p.add_argument("--artifacts", default="artifacts")
    p.add_argument(
        "--data-dir", default=None, help="CLINC150 directory (default: $CLINC150_DIR, else the hub)"
    )
    p.add_argument("--port", type=int, default=8000, help="gateway / chat page port")
    p.add_argument("--classifier-port", type=int, default=8001)
    p.add_argument("--generator-port", type=int, default=8002)
    p.add_argument("--no-serve", action="store_true", help="train and report only")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    from parlance.pack import load_pack

    pack = load_pack(args.pack)
    default = pack.name == "clinc150" and args.pack == "clinc150"
    root = Path(args.artifacts) if default else Path(args.artifacts) / "packs" / pack.name
    names = ["classifier", *(["generator"] if pack.label_map.generated else [])]
    chosen = {name: choose(root, name) for name in names}
    missing = [name for name, (_, ok) in chosen.items() if not ok]
    t0 = time.monotonic()
    for i, name in enumerate(missing, 1):
        secs = train(name, chosen[name][0], args.data_dir, f"{i}/{len(missing)}", str(pack.root))
        print(f"{name} trained in {secs / 60:.1f} min", flush=True)
    if missing:
        print(f"training took {(time.monotonic() - t0) / 60:.1f} min in all", flush=True)
    print()
    for name, (path, _) in chosen.items():
        print(summary(name, path, "CLINC150" if default else pack.name), flush=True)
    if args.no_serve:
        return 0
    from services.local_stack import Stack, serve_forever, wants_example_actions

    generator = chosen["generator"][0] if "generator" in chosen else None
    stack = Stack(
        chosen["classifier"][0],
        generator,
        port=args.port,
        classifier_port=args.classifier_port,
        generator_port=args.generator_port,
        log_dir=root / "logs",
        gateway_env={"PARLANCE_PACK": str(pack.root.resolve())},
        actions_port=args.port + 3 if wants_example_actions(pack) else None,
    )
    return serve_forever(stack)


if __name__ == "__main__":
    sys.exit(main())
