"""Command-line parsing shared by the training scripts: dataclass arguments (as in
transformers' examples) with presets that change defaults only."""

from __future__ import annotations

import sys

import torch
from transformers import HfArgumentParser

from services.common.cpu import native_bf16_cpu

# What every training run wants from Trainer unless a flag says otherwise. Pinned memory
# only helps copies to a GPU (without one, torch warns on every epoch).
TRAINER_DEFAULTS = dict(
    eval_strategy="epoch",
    save_strategy="epoch",
    load_best_model_at_end=True,
    save_total_limit=1,
    save_only_model=True,
    report_to="none",
    seed=42,
    dataloader_num_workers=0,
    dataloader_pin_memory=torch.cuda.is_available(),
)


def native_bf16() -> bool:
    """Whether this machine computes in bfloat16 natively: a GPU that supports it, or a CPU
    with bfloat16 instructions (AVX512-BF16 or AMX). Elsewhere bfloat16 is emulated, and
    mixed precision was not measured to gain anything."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return native_bf16_cpu()


def quiet_libraries() -> None:
    """Keep the terminal to our log and the Trainer's progress bar: no per-file weight
    loading bars, no `datasets` map bars, and no load report for the encoder's unused
    pooler (the classifier pools itself, so those weights are dropped on purpose)."""
    import logging
    import warnings

    import datasets
    import transformers

    # EncoderDecoderModel warns on every forward that old (pre-4.12) checkpoints computed
    # the loss differently; ours are trained with this version, so it never applies.
    warnings.filterwarnings("ignore", message="Version v4.12.0 introduces", category=FutureWarning)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # rouge-score logs "Using default tokenizer." at INFO for every scorer it builds
    logging.getLogger("absl").setLevel(logging.WARNING)


def parse_with_presets(
    dataclass_types: tuple, presets: dict[str, dict], defaults: dict, argv: list[str] | None = None
):
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


def ensure_min_steps(targs, n_train: int, min_steps: int, logger) -> None:
    """Raise the epochs so that a small data set (a pack's few hundred examples) still gets
    `min_steps` optimiser updates: a preset's epochs are sized for CLINC150's 15,000, and at
    a few hundred examples the same epochs are a few dozen steps, far from converged."""
    import math

    per_epoch = math.ceil(
        n_train / max(1, targs.per_device_train_batch_size * max(1, targs.world_size))
    )
    if min_steps and per_epoch * targs.num_train_epochs < min_steps:
        epochs = math.ceil(min_steps / per_epoch)
        logger.info(
            "%d training examples: %d epochs instead of %g (at least %d steps)",
            n_train,
            epochs,
            targs.num_train_epochs,
            min_steps,
        )
        targs.num_train_epochs = epochs
