"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import (
    auroc,
    classification_report,
    confused_pairs,
    expected_calibration_error,
    oos_metrics,
    per_domain_accuracy,
)

LABELS = ["a", "b", "c", "oos"]  # oos index 3


def test_oos_metrics_hand_computed():
    y_true = np.array([0, 0, 1, 2, 3, 3, 3, 3])
    y_pred = np.array([0, 3, 1, 1, 3, 3, 0, 3])
    m = oos_metrics(y_true, y_pred, 3)
    # in-scope: 4 queries, correct: #0, #2 -> 2/4 (the one predicted oos counts as wrong)
    assert m["inscope_accuracy"] == pytest.approx(0.5)
    # oos: 4 queries, caught 3
    assert m["oos_recall"] == pytest.approx(0.75)
    # predicted oos: #1, #4, #5, #7 -> 3 of 4 are oos
    assert m["oos_precision"] == pytest.approx(0.75)
    assert m["oos_f1"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(5 / 8)


def test_ece_hand_computed():
    # Two bins used: confidence 0.9 (4 items, 3 right -> |0.75-0.9| = 0.15),
    # confidence 0.3 (2 items, 1 right -> |0.5-0.3| = 0.2). ECE = 4/6*0.15 + 2/6*0.2.
    conf = np.array([0.9, 0.9, 0.9, 0.9, 0.3, 0.3])
    correct = np.array([1, 1, 1, 0, 1, 0])
    expected = 4 / 6 * 0.15 + 2 / 6 * 0.2
    assert expected_calibration_error(conf, correct, 10) == pytest.approx(expected)
    # perfectly calibrated
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([1, 1])) == 0.0
    assert expected_calibration_error(np.array([]), np.array([])) == 0.0


def test_auroc_hand_computed():
    # positives (in-scope) 0.9, 0.4; negatives 0.5, 0.1: 3 of 4 pairs ordered -> 0.75
    score = np.array([0.9, 0.4, 0.5, 0.1])
    assert auroc(score, np.array([1, 1, 0, 0])) == pytest.approx(0.75)
    assert math.isnan(auroc(score, np.array([1, 1, 1, 1])))


def test_confused_pairs_and_domains():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([1, 1, 0, 0, 1, 2])
    pairs = confused_pairs(y_true, y_pred, LABELS)
    assert pairs[0] == {"true": "a", "predicted": "b", "count": 2}
    assert pairs[1] == {"true": "b", "predicted": "a", "count": 1}
    acc = per_domain_accuracy(y_true, y_pred, LABELS, {"d1": ["a", "b"], "d2": ["c"]})
    assert acc == {"d1": pytest.approx(2 / 5), "d2": 1.0}


def test_report_fields():
    y_true = np.array([0, 1, 2, 3])
    y_pred = np.array([0, 1, 3, 3])
    rep = classification_report(
        y_true,
        y_pred,
        y_pred,
        np.ones(4),
        np.array([1, 1, 0.5, 0.0]),
        LABELS,
        {"d": ["a", "b", "c"]},
    )
    assert rep["inscope_accuracy"] == pytest.approx(2 / 3)
    assert rep["oos_recall"] == 1.0
    assert rep["oos_auroc"] == pytest.approx(1.0)
    assert rep["n_inscope"] == 3 and rep["n_oos"] == 1
    assert 0 < rep["macro_f1"] < 1
