"""Fitting what the decision rule needs on the validation split: temperature and threshold.

Nothing here ever sees the test split.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from services.classifier.scoring import softmax

THRESHOLD_RULES = ("inscope_accuracy", "oos_recall", "balanced")


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """Temperature minimising the (weighted) negative log-likelihood (Guo et al., 2017)."""
    logits = np.asarray(logits, dtype=np.float64)
    idx = np.arange(len(labels))
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)

    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))[idx, labels]
        return float(-(w * np.log(np.clip(p, 1e-12, None))).sum() / w.sum())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def oos_share_weights(labels: np.ndarray, oos_index: int, share: float | None) -> np.ndarray:
    """Weights that make out-of-scope queries `share` of the weighted total.

    The validation split is 3 % out of scope (100 of 3,100); CLINC150's test split is 18 %,
    and real traffic has its own mix. Calibrating for the expected mix keeps confidences honest
    where out-of-scope queries are common. None keeps the split's own mix.
    """
    w = np.ones(len(labels))
    is_oos = np.asarray(labels) == oos_index
    if share is None or not is_oos.any() or is_oos.all():
        return w
    if not 0 < share < 1:
        raise ValueError("the out-of-scope share must be in (0, 1)")
    w[is_oos] = share / (1 - share) * (~is_oos).sum() / is_oos.sum()
    return w


def decision_curve(
    score: np.ndarray, argmax: np.ndarray, y_true: np.ndarray, oos_index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every candidate threshold t (the distinct scores): in-scope accuracy and oos recall
    when `score < t` is rejected as out of scope. Computed in O(n log n) by sorting."""
    inscope = y_true != oos_index
    # A query is in-scope-correct at threshold t iff argmax is right and score >= t.
    correct_in = inscope & (argmax == y_true)
    oos_caught_anyway = (~inscope) & (argmax == oos_index)
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    candidates = np.unique(s)
    # number of items with score < t, for each candidate t
    below = np.searchsorted(s, candidates, side="left")
    cum_correct_in = np.concatenate([[0], np.cumsum(correct_in[order])])
    cum_oos_not_caught = np.concatenate([[0], np.cumsum(((~inscope) & ~oos_caught_anyway)[order])])
    n_in = max(int(inscope.sum()), 1)
    n_oos = max(int((~inscope).sum()), 1)
    acc_in = (correct_in.sum() - cum_correct_in[below]) / n_in
    recall = (oos_caught_anyway.sum() + cum_oos_not_caught[below]) / n_oos
    return candidates, acc_in, recall


def pick_threshold(
    score: np.ndarray,
    argmax: np.ndarray,
    y_true: np.ndarray,
    oos_index: int,
    rule: str = "inscope_accuracy",
    target: float = 0.955,
) -> dict:
    """Choose the out-of-scope threshold on validation data.

    Rules:
      * ``inscope_accuracy`` (default): the highest threshold (so the most out-of-scope
        queries caught) that keeps validation in-scope accuracy >= `target`. It leans on the
        in-scope queries only, whose validation and test distributions match, so the in-scope
        cost carries over; validation oos queries are easier than test ones, so rules that
        aim at a validation oos recall overshoot on test.
      * ``oos_recall``: the lowest threshold whose validation oos recall >= `target`.
      * ``balanced``: maximise the mean of in-scope accuracy and oos recall (`target` unused).
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; choose from {THRESHOLD_RULES}")
    cand, acc_in, recall = decision_curve(
        np.asarray(score, np.float64), np.asarray(argmax), np.asarray(y_true), oos_index
    )
    # Thresholds are placed midway between neighbouring scores: robust to float round-off
    # between the torch, ONNX fp32 and int8 backends.
    mids = np.concatenate([[cand[0] - 1e-6], (cand[1:] + cand[:-1]) / 2])
    if rule == "inscope_accuracy":
        ok = np.flatnonzero(acc_in >= target)
        i = int(ok.max()) if len(ok) else 0
    elif rule == "oos_recall":
        ok = np.flatnonzero(recall >= target)
        i = int(ok.min()) if len(ok) else len(cand) - 1
    else:
        i = int(np.argmax((acc_in + recall) / 2))
    return {
        "threshold": float(mids[i]),
        "rule": rule,
        "target": target,
        "val_inscope_accuracy": float(acc_in[i]),
        "val_oos_recall": float(recall[i]),
    }


def choose_band(
    score: np.ndarray,
    argmax: np.ndarray,
    y_true: np.ndarray,
    oos_index: int,
    threshold: float,
    max_oos_share: float = 0.1,
) -> dict:
    """The borderline band below the out-of-scope threshold, chosen on validation data.

    A query whose score falls in [band, threshold) and whose top class is an intent gets a
    confirmation question ("Do you want to book a flight?") instead of the fallback. The band
    reaches down as far as it can while at most `max_oos_share` of the validation
    out-of-scope queries would be asked (they answer "no" and are rejected one turn later;
    what the band buys is the in-scope queries whose top intent was right).

    Returns {"confirm_threshold": None, ...} for a share of 0 (no band), when there is no
    out-of-scope validation data to bound the band by, or when no query would fall in it.
    """
    score = np.asarray(score, np.float64)
    argmax, y_true = np.asarray(argmax), np.asarray(y_true)
    is_oos = y_true == oos_index
    info: dict = {"rule": "max_oos_share", "max_oos_share": max_oos_share}
    if not is_oos.any() or not 0 < max_oos_share < 1:
        return {**info, "confirm_threshold": None}
    rejected = (argmax != oos_index) & (score < threshold)
    # scores of the rejected out-of-scope queries, highest (most in-scope-like) first
    oos_scores = np.sort(score[rejected & is_oos])[::-1]
    allowed = int(np.floor(max_oos_share * is_oos.sum()))
    candidates = np.sort(score[rejected])
    if not len(candidates):
        return {**info, "confirm_threshold": None}
    if allowed >= len(oos_scores):
        band = float(candidates[0]) - 1e-6  # every rejected query with an intent on top
    else:
        # just above the first out-of-scope score that would exceed the allowance, midway
        # to the next higher score (robust to the backends' round-off, as the threshold)
        limit = oos_scores[allowed]
        higher = candidates[candidates > limit]
        band = float((limit + higher[0]) / 2) if len(higher) else float(threshold)
    if band >= threshold:
        return {**info, "confirm_threshold": None}
    in_band = rejected & (score >= band)
    info.update(
        confirm_threshold=band,
        val_in_band=int(in_band.sum()),
        val_rescued=int((in_band & ~is_oos & (argmax == y_true)).sum()),
        val_oos_asked=int((in_band & is_oos).sum()),
        val_oos_asked_share=float((in_band & is_oos).sum() / is_oos.sum()),
    )
    return info
