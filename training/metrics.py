"""Evaluation metrics for intent classification with out-of-scope detection.

The standard figures of Larson et al. (2019): in-scope accuracy over in-scope queries (a query
predicted out of scope counts as wrong) and out-of-scope recall over the oos queries; plus
precision, macro-F1, per-domain accuracy, expected calibration error, AUROC of the
out-of-scope score, and the most confused pairs. Built on scikit-learn, not `evaluate.load`
(which needs the hub).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.metrics import f1_score, precision_score, roc_auc_score


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> float:
    """ECE with equal-width bins on (0, 1]: sum over bins of |accuracy - confidence| * share."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if len(confidence) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right-closed bins so that a confidence of exactly 1.0 lands in the last bin
    idx = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> list[dict]:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = idx == b
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "count": int(sel.sum()),
                "accuracy": float(np.mean(correct[sel])) if sel.any() else None,
                "confidence": float(np.mean(confidence[sel])) if sel.any() else None,
            }
        )
    return out


def auroc(inscope_score: np.ndarray, is_inscope: np.ndarray) -> float:
    """AUROC of separating in-scope (positive) from out-of-scope queries by the score."""
    is_inscope = np.asarray(is_inscope, dtype=bool)
    if is_inscope.all() or not is_inscope.any():
        return float("nan")
    return float(roc_auc_score(is_inscope.astype(int), inscope_score))


def oos_metrics(y_true: np.ndarray, y_pred: np.ndarray, oos_index: int) -> dict[str, float]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    inscope = y_true != oos_index
    is_oos = ~inscope
    pred_oos = y_pred == oos_index
    return {
        "inscope_accuracy": float((y_pred[inscope] == y_true[inscope]).mean())
        if inscope.any()
        else float("nan"),
        "oos_recall": float(pred_oos[is_oos].mean()) if is_oos.any() else float("nan"),
        "oos_precision": float(is_oos[pred_oos].mean()) if pred_oos.any() else float("nan"),
        "oos_f1": _f1(is_oos, pred_oos),
        "accuracy": float((y_pred == y_true).mean()),
    }


def _f1(truth: np.ndarray, pred: np.ndarray) -> float:
    tp = float((truth & pred).sum())
    denom = float(truth.sum() + pred.sum())
    return 2 * tp / denom if denom else float("nan")


def per_domain_accuracy(
    y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], domains: dict[str, list[str]]
) -> dict[str, float]:
    index = {name: i for i, name in enumerate(labels)}
    out = {}
    for domain, intents in domains.items():
        ids = [index[i] for i in intents if i in index]
        sel = np.isin(y_true, ids)
        if sel.any():
            out[domain] = float((y_pred[sel] == y_true[sel]).mean())
    return out


def confused_pairs(
    y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], top: int = 20
) -> list[dict]:
    counts = Counter((int(t), int(p)) for t, p in zip(y_true, y_pred, strict=True) if t != p)
    return [
        {"true": labels[t], "predicted": labels[p], "count": c}
        for (t, p), c in counts.most_common(top)
    ]


def classification_report(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    y_argmax: np.ndarray,
    confidence: np.ndarray,
    inscope_score: np.ndarray,
    labels: list[str],
    domains: dict[str, list[str]] | None = None,
) -> dict:
    """Every figure of the evaluation for one split, as plain JSON-able values.

    `y_pred` is the final decision (threshold applied); `y_argmax` and `confidence` are the
    classifier's own top class and calibrated probability, which is what ECE is about.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    oos_index = labels.index("oos")
    report = oos_metrics(y_true, y_pred, oos_index)
    present = np.unique(np.concatenate([y_true, y_pred]))
    report["macro_f1"] = float(
        f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
    )
    report["macro_precision"] = float(
        precision_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
    )
    report["argmax_inscope_accuracy"] = oos_metrics(y_true, y_argmax, oos_index)["inscope_accuracy"]
    report["argmax_oos_recall"] = oos_metrics(y_true, y_argmax, oos_index)["oos_recall"]
    report["ece"] = expected_calibration_error(confidence, y_argmax == y_true)
    inscope = y_true != oos_index
    report["ece_inscope"] = expected_calibration_error(
        confidence[inscope], (y_argmax == y_true)[inscope]
    )
    report["oos_auroc"] = auroc(inscope_score, y_true != oos_index)
    report["n_inscope"] = int((y_true != oos_index).sum())
    report["n_oos"] = int((y_true == oos_index).sum())
    if domains:
        report["domain_accuracy"] = per_domain_accuracy(y_true, y_pred, labels, domains)
    report["confused_pairs"] = confused_pairs(y_true, y_pred, labels)
    return report


# Word-count buckets for accuracy by utterance length: short requests ("book a flight")
# carry the least evidence and deserve figures of their own.
LENGTH_BUCKETS = ((1, 2), (3, 4), (5, 6), (7, 9), (10, 12), (13, None))


def by_length(
    texts: list[str],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    argmax: np.ndarray,
    oos_index: int,
) -> list[dict]:
    """In-scope accuracy (with the threshold and argmax only) and oos recall per bucket of
    whitespace-separated words."""
    words = np.array([len(t.split()) for t in texts])
    inscope = y_true != oos_index
    out = []
    for lo, hi in LENGTH_BUCKETS:
        sel = (words >= lo) & (words <= (hi if hi is not None else words.max(initial=lo)))
        ins, oos = sel & inscope, sel & ~inscope
        out.append(
            {
                "words": f"{lo}-{hi}" if hi is not None else f"{lo}+",
                "n_inscope": int(ins.sum()),
                "n_oos": int(oos.sum()),
                "inscope_accuracy": float((y_pred[ins] == y_true[ins]).mean())
                if ins.any()
                else None,
                "argmax_inscope_accuracy": (
                    float((argmax[ins] == y_true[ins]).mean()) if ins.any() else None
                ),
                "oos_recall": float((y_pred[oos] == oos_index).mean()) if oos.any() else None,
            }
        )
    return out


def band_report(
    y_true: np.ndarray, argmax: np.ndarray, oos: np.ndarray, borderline: np.ndarray, oos_index: int
) -> dict:
    """What the borderline band does, assuming users answer the confirmation truthfully:
    an in-scope query in the band whose top intent is right is answered after one "yes"; one
    whose top intent is wrong gets "no" and is rejected as before; an out-of-scope query in
    the band gets "no" and is rejected one turn later."""
    inscope = y_true != oos_index
    right = argmax == y_true
    n_in, n_oos = max(int(inscope.sum()), 1), max(int((~inscope).sum()), 1)
    answered = ~oos & right & inscope
    rescued = borderline & inscope & right
    return {
        "inscope_rejected": int((oos & inscope).sum()),
        "in_band": int(borderline.sum()),
        "rescued": int(rescued.sum()),
        "inscope_wrong_top": int((borderline & inscope & ~right).sum()),
        "oos_asked": int((borderline & ~inscope).sum()),
        "oos_asked_share": float((borderline & ~inscope).sum() / n_oos),
        "inscope_accuracy": float(answered.sum() / n_in),
        "inscope_accuracy_with_confirmation": float((answered | rescued).sum() / n_in),
        "oos_recall": float((oos & ~inscope).sum() / n_oos),
        "oos_rejected_without_question": float((oos & ~borderline & ~inscope).sum() / n_oos),
    }
