"""Averaged weights of the last epochs (checkpoint averaging, as in SWA: Izmailov et al.,
2018), chosen on val against the best single epoch.

Fine-tuning ends in a region where neighbouring epochs' weights differ mostly by noise of the
last steps; their mean tends to sit in a flatter part of the loss surface and to generalise
a little better than any one of them. The callback keeps a copy of the trainable weights at
each epoch's end (a few hundred MB for the cpu preset's encoder); `choose` evaluates the
means of the last k epochs on val and keeps the best candidate, the best single epoch (what
`load_best_model_at_end` restored) included, so averaging can never be chosen over a better
epoch on val. The test split plays no part."""

from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class EpochSnapshots(TrainerCallback):
    """The trainable weights at the end of each of the last `keep` epochs, on the CPU."""

    def __init__(self, keep: int):
        self.keep = keep
        self.snapshots: list[tuple[float, dict[str, torch.Tensor]]] = []

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        weights = trainable_weights(model)
        self.snapshots = [*self.snapshots, (round(state.epoch or 0.0, 2), weights)][-self.keep :]


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A float32 copy on the CPU of the weights training changes."""
    return {
        name: p.detach().to("cpu", torch.float32, copy=True)
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def mean_of(snapshots: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: torch.stack([s[name] for s in snapshots]).mean(0) for name in snapshots[0]}


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def choose(
    trainer, snapshots: EpochSnapshots, metric: str, best: dict, greater_is_better: bool = True
) -> dict:
    """Evaluate the mean of the last k epochs (k = 2 .. all kept) on val and leave the model
    with the best candidate's weights; `best`: the val metrics of the model as it is (the
    best single epoch); `metric` and `greater_is_better` as the Trainer picks its epoch.
    Returns a summary for the manifest, with the chosen val metrics. With LoRA the factors
    are averaged one by one (the mean of products is not the product of means): a
    candidate like any other, judged on val."""
    key = val_key(metric)
    model = trainer.model
    candidates = {"best epoch": (best, trainable_weights(model))}
    for k in range(2, len(snapshots.snapshots) + 1):
        last = snapshots.snapshots[-k:]
        weights = mean_of([w for _, w in last])
        load_weights(model, weights)
        label = f"mean of epochs {last[0][0]:g}-{last[-1][0]:g}"
        candidates[label] = (trainer.evaluate(), weights)
        logger.info("%s: val %s %.4f", label, metric, candidates[label][0][key])
    return serve_best(model, candidates, metric, key, greater_is_better)


def val_key(metric: str) -> str:
    """The key of `metric` in `Trainer.evaluate()`'s answer, as the Trainer picks its epoch."""
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def serve_best(
    model: torch.nn.Module, candidates: dict, metric: str, key: str, greater: bool
) -> dict:
    """Load the candidate best on val into `model`; ties go to the simpler model, the one
    listed first (dicts keep insertion order; max and min keep the first). `candidates`:
    label -> (val metrics, weights). Returns the summary for the manifest."""
    pick = max if greater else min
    chosen = pick(candidates, key=lambda c: candidates[c][0][key])
    metrics, weights = candidates[chosen]
    load_weights(model, weights)
    logger.info("weights: %s (val %s %.4f)", chosen, metric, metrics[key])
    return {
        "chosen": chosen,
        "metric": key,
        "val": {label: round(m[key], 6) for label, (m, _) in candidates.items()},
        "val_metrics": metrics,
    }


def choose_soup(
    trainer, runs: list[tuple[dict, dict[str, torch.Tensor]]], metric: str, greater: bool = True
) -> dict:
    """A model soup (Wortsman et al., 2022) of runs fine-tuned from the same initial weights
    on different data orders: the best single run, the uniform mean of all runs and the
    greedy soup (runs added best first, each kept only if val does not drop) are evaluated
    on val, and the model is left with the best. Runs fine-tuned from one pretrained model
    stay in one basin of the loss, so their mean is a model of its own that tends to behave
    like their ensemble at the cost of one. `runs`: (val metrics, trainable weights) per run.
    Returns a summary for the manifest, with the chosen val metrics."""
    key = val_key(metric)
    model = trainer.model
    sign = 1 if greater else -1

    def value(metrics: dict) -> float:
        return sign * metrics[key]

    order = sorted(range(len(runs)), key=lambda i: -value(runs[i][0]))
    best = order[0]
    candidates = {f"run {best + 1}": runs[best]}

    def evaluate(members: list[int]) -> tuple[dict, dict[str, torch.Tensor]]:
        weights = mean_of([runs[i][1] for i in members])
        load_weights(model, weights)
        return trainer.evaluate(), weights

    greedy, greedy_metrics = [best], runs[best]
    tried: dict[frozenset, tuple[dict, dict[str, torch.Tensor]]] = {}
    for i in order[1:]:
        trial = tried[frozenset([*greedy, i])] = evaluate([*greedy, i])
        logger.info(
            "soup of runs %s: val %s %.4f",
            ",".join(str(r + 1) for r in sorted([*greedy, i])),
            metric,
            trial[0][key],
        )
        if value(trial[0]) >= value(greedy_metrics[0]):
            greedy, greedy_metrics = [*greedy, i], trial
    if len(greedy) > 1:
        candidates[f"greedy soup of runs {','.join(str(r + 1) for r in sorted(greedy))}"] = (
            greedy_metrics
        )
    if len(greedy) < len(runs):  # with every run in the greedy soup it is the uniform one
        everyone = frozenset(range(len(runs)))
        if everyone not in tried:
            tried[everyone] = evaluate(sorted(everyone))
            logger.info("uniform soup: val %s %.4f", metric, tried[everyone][0][key])
        candidates["uniform soup"] = tried[everyone]
    # listed simplest first: the single run, then the smaller soup
    summary = serve_best(model, candidates, metric, key, greater)
    return {**summary, "runs_val": [round(m[key], 6) for m, _ in runs]}
