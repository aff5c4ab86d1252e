"""PNG plots of the evaluation: reliability diagram and confusion among the worst intents."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_reliability(bins: list[dict], path: str | Path, ece: float | None = None) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    centres = [(b["lo"] + b["hi"]) / 2 for b in bins]
    acc = [b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins]
    width = bins[0]["hi"] - bins[0]["lo"]
    ax.bar(centres, acc, width=width * 0.95, edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set_xlabel("calibrated confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability, test" + (f" (ECE {ece:.3f})" if ece is not None else ""))
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion_worst(
    y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], path: str | Path, n: int = 15
) -> None:
    """Confusion matrix restricted to the `n` intents with the lowest recall (plus oos)."""
    k = len(labels)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (y_true, y_pred), 1)
    support = cm.sum(1)
    recall = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), 1.0)
    worst = [int(i) for i in np.argsort(recall)[:n]]
    oos = labels.index("oos")
    if oos not in worst:
        worst.append(oos)
    sub = cm[np.ix_(worst, worst)]
    # Colour by the share of each true class (rows), so that oos's 1,000 queries do not
    # wash out the other rows; the numbers are counts.
    share = sub / np.maximum(cm[worst].sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(9, 8))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    names = [labels[i] for i in worst]
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    for i in range(len(names)):
        for j in range(len(names)):
            if sub[i, j]:
                ax.text(
                    j,
                    i,
                    sub[i, j],
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion among the {n} lowest-recall intents (test)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
