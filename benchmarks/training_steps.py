"""Seconds per optimiser step of the cpu classifier recipe under the training speed options,
side by side in one process: the cpu preset's model (MiniLM, mean pooling, cosine head),
batches of 32 CLINC150 training queries, AdamW, forward + backward + step. Settings are
interleaved round by round, so that a slow moment of a shared machine falls on all alike.

    python -m benchmarks.training_steps            # CLINC150 from $CLINC150_DIR

Options measured (training/classifier.py flags): `--freeze_word_embeddings`, `--bf16`
(autocast to bfloat16; only native where the CPU has bfloat16 instructions) and
`--train_sampling_strategy group_by_length` (batches of similar lengths, less padding).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

import torch
from transformers import AutoTokenizer
from transformers.trainer_pt_utils import get_length_grouped_indices

from services.classifier.modeling import HeadConfig, IntentClassifier, build_encoder
from training.classifier import OFFLINE_MINILM, resolve_model_path
from training.cli import native_bf16, quiet_libraries
from training.data import load_from_dir

SETTINGS = {
    "fp32 (the recipe's steps before)": {},
    "frozen word embeddings": {"freeze": True},
    "bf16": {"bf16": True},
    "length-grouped batches": {"grouped": True},
    "bf16 + length-grouped (the cpu preset now)": {"bf16": True, "grouped": True},
    "all three": {"freeze": True, "bf16": True, "grouped": True},
}


def batches(lengths: list[int], grouped: bool, n: int, seed: int) -> list[list[int]]:
    """`n` batches of 32 drawn at random from one epoch's order: a random permutation, or
    the order transformers' LengthGroupedSampler trains on (random megabatches, each sorted
    by length and cut into batches)."""
    generator = torch.Generator().manual_seed(seed)
    if grouped:
        order = get_length_grouped_indices(lengths, 32, generator=generator)
    else:
        order = torch.randperm(len(lengths), generator=generator).tolist()
    epoch = [order[i : i + 32] for i in range(0, len(order) - 31, 32)]
    return random.Random(seed).sample(epoch, n)


def seconds_per_step(
    setting: dict, data, lengths: list[int], tokenizer, steps: int, seed: int
) -> float:
    torch.manual_seed(seed)
    encoder = build_encoder(resolve_model_path(OFFLINE_MINILM))
    head = HeadConfig(len(data.labels), pooling="mean", head="cosine", scale=30.0, margin=0.2)
    model = IntentClassifier(encoder, head).train()
    if setting.get("freeze"):
        encoder.get_input_embeddings().weight.requires_grad_(False)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = data.label2id
    texts, labels = data.train.texts, [ids[i] for i in data.train.intents]
    warm = 3
    times = []
    grouped = setting.get("grouped", False)
    for index, chunk in enumerate(batches(lengths, grouped, steps + warm, seed)):
        enc = tokenizer([texts[i] for i in chunk], padding=True, return_tensors="pt")
        target = torch.tensor([labels[i] for i in chunk])
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=setting.get("bf16", False)):
            out = model(**enc, labels=target)
        out["loss"].float().backward()
        optimiser.step()
        optimiser.zero_grad()
        if index >= warm:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="CLINC150 directory ($CLINC150_DIR)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting, round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    quiet_libraries()
    data = load_from_dir(args.data_dir or os.environ["CLINC150_DIR"], "plus")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(OFFLINE_MINILM))
    lengths = [len(ids) for ids in tokenizer(data.train.texts)["input_ids"]]  # as the sampler
    found: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for round_ in range(args.rounds):
        for name, setting in SETTINGS.items():
            found[name].append(
                seconds_per_step(setting, data, lengths, tokenizer, args.steps, round_)
            )
    result = {
        "torch_threads": torch.get_num_threads(),
        "native_bf16": native_bf16(),
        "seconds_per_step": {name: round(statistics.median(v), 4) for name, v in found.items()},
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
