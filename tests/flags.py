"""Command-line flags for the trainers, written as keyword arguments: one line per setting
in the tests instead of two (a flag and its value)."""

from __future__ import annotations


def flags(**options) -> list[str]:
    """`flags(num_train_epochs=3, disable_tqdm=True)` ->
    ["--num_train_epochs", "3", "--disable_tqdm", "true"], in the order given."""
    out = []
    for name, value in options.items():
        out += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return out
