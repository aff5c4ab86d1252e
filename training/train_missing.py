"""Train the cpu artifacts that are missing: what the compose `trainer` service runs.

    python -m training.train_missing --output-root /opt/ml/model [--data-dir DIR]

Writes OUTPUT_ROOT/classifier and OUTPUT_ROOT/generator with the `cpu` presets, skipping
any that already has a manifest (so restarting the stack does not retrain).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger("training.train_missing")


def train(
    name: str, preset: str, output: Path, data_dir: str | None, pack: str = "clinc150"
) -> None:
    """Train artifact `name` ('classifier' or 'generator') of `pack` with `preset`."""
    if name == "classifier":
        from training import classifier as trainer
    else:
        from training import generator as trainer
    data = ["--data_dir", data_dir] if data_dir else []
    trainer.main(["--preset", preset, "--pack", str(pack), "--output_dir", str(output), *data])


def main(argv: list[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-root", required=True)
    p.add_argument(
        "--data-dir", default=None, help="CLINC150 directory (default: $CLINC150_DIR, else the hub)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    root = Path(args.output_root)
    trained = []
    for name in ("classifier", "generator"):
        out = root / name
        if (out / "manifest.json").is_file():
            logger.info("%s: present at %s, not retrained", name, out)
            continue
        logger.info("%s: training the cpu preset into %s", name, out)
        train(name, "cpu", out, args.data_dir)
        trained.append(name)
    return trained


if __name__ == "__main__":
    main()
