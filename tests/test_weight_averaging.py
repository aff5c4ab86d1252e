"""Checkpoint averaging (training/weight_averaging.py): the snapshots kept, their means, and
the choice on val, with a small real model and a real evaluation (accuracy on fixed data)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from training.weight_averaging import EpochSnapshots, choose, choose_soup, mean_of


class Evaluating:
    """What `choose` needs of a Trainer: the model and `evaluate()` on a val set."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
        self.model, self.x, self.y = model, x, y

    def evaluate(self) -> dict:
        with torch.no_grad():
            pred = self.model(self.x).argmax(-1)
        return {"eval_accuracy": float((pred == self.y).float().mean())}


def snapshot_at(snaps: EpochSnapshots, model: torch.nn.Module, epoch: float) -> None:
    snaps.on_epoch_end(None, SimpleNamespace(epoch=epoch), None, model=model)


def two_class_trainer() -> Evaluating:
    """A 2 x 2 linear model, judged on the two unit vectors as classes 0 and 1."""
    model = torch.nn.Linear(2, 2, bias=False)
    return Evaluating(model, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))


def test_only_the_last_epochs_are_kept_as_copies():
    model = torch.nn.Linear(2, 2)
    snaps = EpochSnapshots(keep=2)
    for epoch in (1.0, 2.0, 3.0):
        with torch.no_grad():
            model.weight.fill_(epoch)
        snapshot_at(snaps, model, epoch)
    assert [e for e, _ in snaps.snapshots] == [2.0, 3.0]
    assert [float(w["weight"][0, 0]) for _, w in snaps.snapshots] == [2.0, 3.0]
    mean = mean_of([w for _, w in snaps.snapshots])
    assert torch.allclose(mean["weight"], torch.full((2, 2), 2.5))


def test_the_mean_is_chosen_only_where_val_says_it_is_better():
    # Two epochs that each get half the val set wrong; their mean gets it all right.
    trainer = two_class_trainer()
    model = trainer.model
    snaps = EpochSnapshots(keep=3)
    for epoch, weight in ((1.0, [[2.0, 1.0], [0.0, 0.0]]), (2.0, [[0.0, 0.0], [1.0, 2.0]])):
        with torch.no_grad():
            model.weight.copy_(torch.tensor(weight))
        snapshot_at(snaps, model, epoch)
    best = trainer.evaluate()  # the model as training left it: epoch 2
    assert best["eval_accuracy"] == 0.5
    summary = choose(trainer, snaps, "accuracy", best)
    assert summary["chosen"] == "mean of epochs 1-2"
    assert summary["val"] == {"best epoch": 0.5, "mean of epochs 1-2": 1.0}
    assert trainer.evaluate()["eval_accuracy"] == 1.0  # the model now holds the mean
    assert torch.allclose(model.weight, torch.tensor([[1.0, 0.5], [0.5, 1.0]]))


def test_a_tie_keeps_the_best_epoch():
    trainer = two_class_trainer()
    model = trainer.model
    snaps = EpochSnapshots(keep=2)
    for epoch, scale in ((1.0, 1.0), (2.0, 3.0)):
        with torch.no_grad():
            model.weight.copy_(torch.eye(2) * scale)
        snapshot_at(snaps, model, epoch)
    summary = choose(trainer, snaps, "eval_accuracy", trainer.evaluate())
    assert summary["chosen"] == "best epoch"  # the mean is as good, not better
    assert torch.allclose(model.weight, torch.eye(2) * 3.0)


class ErrorRate(Evaluating):
    """A metric to minimise, as `--metric_for_best_model loss` is."""

    def evaluate(self) -> dict:
        return {"eval_loss": 1.0 - super().evaluate()["eval_accuracy"]}


def test_a_metric_to_minimise_is_minimised():
    model = torch.nn.Linear(2, 2, bias=False)
    trainer = ErrorRate(model, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    snaps = EpochSnapshots(keep=2)
    for epoch, weight in ((1.0, [[2.0, 1.0], [0.0, 0.0]]), (2.0, [[0.0, 0.0], [1.0, 2.0]])):
        with torch.no_grad():
            model.weight.copy_(torch.tensor(weight))
        snapshot_at(snaps, model, epoch)
    summary = choose(trainer, snaps, "loss", trainer.evaluate(), greater_is_better=False)
    assert summary["chosen"] == "mean of epochs 1-2"
    assert summary["val"] == {"best epoch": 0.5, "mean of epochs 1-2": 0.0}


def run(weight) -> tuple[dict, dict[str, torch.Tensor]]:
    """A soup ingredient as `choose_soup` takes it: its val metrics and its weights."""
    trainer = two_class_trainer()
    with torch.no_grad():
        trainer.model.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
    return trainer.evaluate(), {"weight": trainer.model.weight.detach().clone()}


def test_the_greedy_soup_keeps_only_the_runs_that_help_on_val():
    # Runs 1 and 2 each get half of val wrong and their mean all of it right; run 3 gets
    # half wrong and spoils any mean it joins (the uniform soup of all three gets 0.5).
    runs = [
        run([[2.0, 1.0], [0.0, 0.0]]),
        run([[0.0, 0.0], [1.0, 2.0]]),
        run([[0.0, 6.0], [0.0, 0.0]]),
    ]
    trainer = two_class_trainer()
    summary = choose_soup(trainer, runs, "accuracy")
    assert summary["runs_val"] == [0.5, 0.5, 0.5]
    assert summary["chosen"] == "greedy soup of runs 1,2"
    assert summary["val"] == {"run 1": 0.5, "greedy soup of runs 1,2": 1.0, "uniform soup": 0.5}
    assert torch.allclose(trainer.model.weight, torch.tensor([[1.0, 0.5], [0.5, 1.0]]))


def test_a_soup_no_better_than_the_best_run_is_not_served():
    runs = [run(torch.eye(2) * 3.0), run([[2.0, 1.0], [0.0, 0.0]])]
    trainer = two_class_trainer()
    summary = choose_soup(trainer, runs, "accuracy")
    assert summary["chosen"] == "run 1"
    # the soup ties with run 1 on val (so the greedy soup takes run 2 in): the run is served
    assert summary["val"] == {"run 1": 1.0, "greedy soup of runs 1,2": 1.0}
    assert torch.allclose(trainer.model.weight, torch.eye(2) * 3.0)
