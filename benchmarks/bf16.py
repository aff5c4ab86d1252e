"""The classifier in bfloat16 through torch beside the other backends, in one process,
interleaved: texts/s at batch 32 and batch-1 p50 at 2 threads and at 1, and what tracing
(TorchScript, frozen) adds to eager bfloat16; and whether bfloat16 changes any answer on val.

    python -m benchmarks.bf16 --artifact artifacts/classifier

On a CPU without bfloat16 instructions bfloat16 is emulated: the figures show what that
costs (the service's `auto` times it only where the CPU has them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from services.classifier.artifact import ClassifierArtifact
from services.classifier.backends import KINDS, TorchBackend, forward_batched, load_backend
from services.common.cpu import native_bf16_cpu


def eager_bf16(art: ClassifierArtifact) -> TorchBackend:
    """torch-bf16 without the traced graph: what tracing is measured against."""
    backend = TorchBackend(art, bf16=True, trace=False)
    backend.name = "torch-bf16 eager"
    return backend


def rates(backends: dict, texts: list[str], rounds: int) -> dict:
    batches = [texts[i : i + 32] for i in range(0, 640, 32)]
    singles = [[t] for t in texts[:100]]
    out = {name: {"batch32_texts_s": 0.0, "batch1_ms": []} for name in backends}
    for b in backends.values():
        b.forward(batches[0])
        b.forward(singles[0])
    for _ in range(rounds):
        for name, b in backends.items():
            started = time.perf_counter()
            for x in batches:
                b.forward(x)
            rate = 32 * len(batches) / (time.perf_counter() - started)
            out[name]["batch32_texts_s"] = max(out[name]["batch32_texts_s"], rate)
            for x in singles:
                started = time.perf_counter()
                b.forward(x)
                out[name]["batch1_ms"].append(1000 * (time.perf_counter() - started))
    for r in out.values():
        r["batch32_texts_s"] = round(r["batch32_texts_s"])
        r["batch1_ms"] = round(statistics.median(r["batch1_ms"]), 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    import torch

    from training.data import load_clinc

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--output", default=None, help="also write the figures here (JSON)")
    args = p.parse_args(argv)
    art = ClassifierArtifact.load(args.artifact)
    data = load_clinc(None, "full")
    result: dict = {"native_bf16": native_bf16_cpu(), "threads": {}}
    for threads in (2, 1):
        torch.set_num_threads(threads)
        backends = {k: load_backend(art, k, threads=threads) for k in KINDS}
        backends["torch-bf16 eager"] = eager_bf16(art)
        result["threads"][threads] = rates(backends, data.test.texts, args.rounds)
    # (the last round's models, on one thread)
    fp32, _ = forward_batched(backends["torch"], data.val.texts)
    bf16, _ = forward_batched(backends["torch-bf16"], data.val.texts)
    result["val_argmax_changed"] = int((fp32.argmax(-1) != bf16.argmax(-1)).sum())
    result["val_texts"] = len(data.val.texts)
    result["val_max_logit_difference"] = round(float(np.abs(fp32 - bf16).max()), 3)
    text = json.dumps(result, indent=2)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
