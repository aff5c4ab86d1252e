"""Command-line parsing shared by the training scripts: dataclass arguments (as in
transformers' examples) with presets that change defaults only."""

from __future__ import annotations

import sys

from transformers import HfArgumentParser

# What every training run wants from Trainer unless a flag says otherwise.
TRAINER_DEFAULTS = dict(eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                        save_total_limit=1, save_only_model=True, report_to="none", seed=42,
                        dataloader_num_workers=0)


def parse_with_presets(dataclass_types: tuple, presets: dict[str, dict], defaults: dict,
                       argv: list[str] | None = None):
    """Two passes: the first finds `--preset`, the second parses with the preset's defaults
    (over `defaults`), so any flag given explicitly overrides the preset."""
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(dataclass_types)
    first, _ = parser.parse_known_args(argv)
    preset = getattr(first, "preset", "cpu")
    if preset not in presets:
        parser.error(f"--preset must be one of {list(presets)}")
    parser.set_defaults(**{**TRAINER_DEFAULTS, **defaults, **presets[preset]})
    return parser.parse_args_into_dataclasses(args=argv)
