"""Temperature fitting and threshold rules, on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from services.classifier.scoring import softmax
from training.calibration import choose_band, decision_curve, fit_temperature, pick_threshold


def test_temperature_recovers_the_generating_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 3, size=(4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(true_logits)])
    # A model that is overconfident by a factor 2.5: fitting should find T ~ 2.5.
    t = fit_temperature(true_logits * 2.5, labels)
    assert t == pytest.approx(2.5, rel=0.1)


def test_decision_curve_counts():
    # labels: 0,1 in scope; 2 is oos.
    y = np.array([0, 1, 0, 2, 2])
    argmax = np.array([0, 1, 1, 0, 2])  # third is wrong; last oos caught by argmax
    score = np.array([0.9, 0.5, 0.8, 0.6, 0.1])
    cand, acc, rec = decision_curve(score, argmax, y, 2)
    assert list(cand) == [0.1, 0.5, 0.6, 0.8, 0.9]
    # threshold 0.1 rejects nothing: in-scope correct 2/3, oos recall 1/2 (argmax caught one)
    assert acc[0] == pytest.approx(2 / 3) and rec[0] == pytest.approx(0.5)
    # threshold 0.6 rejects 0.1 and 0.5: the in-scope #1 (correct) lost -> 1/3
    assert acc[2] == pytest.approx(1 / 3) and rec[2] == pytest.approx(0.5)
    # threshold 0.8 also rejects the oos at 0.6 -> recall 1
    assert rec[3] == pytest.approx(1.0)


def test_rules_pick_the_expected_thresholds():
    rng = np.random.default_rng(1)
    n_in, n_oos = 1000, 200
    y = np.concatenate([rng.integers(0, 5, n_in), np.full(n_oos, 5)])
    argmax = np.where(np.arange(len(y)) < n_in, y, rng.integers(0, 5, len(y)))
    score = np.concatenate([rng.normal(2, 1, n_in), rng.normal(-1, 1, n_oos)])
    r = pick_threshold(score, argmax, y, 5, rule="inscope_accuracy", target=0.95)
    assert r["val_inscope_accuracy"] >= 0.95
    kept = (score[:n_in] >= r["threshold"]).mean()
    assert kept == pytest.approx(r["val_inscope_accuracy"])
    # the highest such threshold: one step further would break the target
    assert np.quantile(score[:n_in], 0.05) == pytest.approx(r["threshold"], abs=0.05)
    r2 = pick_threshold(score, argmax, y, 5, rule="oos_recall", target=0.9)
    assert r2["val_oos_recall"] >= 0.9
    assert (score[n_in:] < r2["threshold"]).mean() == pytest.approx(r2["val_oos_recall"])
    r3 = pick_threshold(score, argmax, y, 5, rule="balanced")
    assert -1 < r3["threshold"] < 2
    with pytest.raises(ValueError, match="unknown threshold rule"):
        pick_threshold(score, argmax, y, 5, rule="magic")


def test_oos_share_weights():
    from training.calibration import oos_share_weights

    y = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 2])  # 1 oos of 10
    w = oos_share_weights(y, 2, 0.5)
    assert w[y == 2].sum() == pytest.approx(w[y != 2].sum())
    assert np.all(oos_share_weights(y, 2, None) == 1)
    with pytest.raises(ValueError):
        oos_share_weights(y, 2, 1.5)


def test_weighted_temperature_differs_when_oos_is_overconfident():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 1, size=(500, 3))
    y = np.where(np.arange(500) < 450, logits[:, :2].argmax(1), 2)
    logits[np.arange(450), y[:450]] += 3  # in-scope: right and confident
    logits[450:, 0] += 6  # oos: confidently wrong
    t_plain = fit_temperature(logits, y)
    t_heavy = fit_temperature(logits, y, np.where(y == 2, 10.0, 1.0))
    assert t_heavy > t_plain  # more weight on confident mistakes -> softer probabilities


def test_band_lets_at_most_the_share_of_oos_in_and_stays_below_the_threshold():
    rng = np.random.default_rng(3)
    n_in, n_oos, oos = 900, 100, 3
    y = np.concatenate([rng.integers(0, 3, n_in), np.full(n_oos, oos)])
    score = np.concatenate([rng.normal(2.0, 1.0, n_in), rng.normal(-1.0, 1.0, n_oos)])
    argmax = np.where(y == oos, rng.integers(0, 3, len(y)), y)  # the oos class never on top
    for share in (0.05, 0.1, 0.3):
        band = choose_band(score, argmax, y, oos, threshold=0.5, max_oos_share=share)
        b = band["confirm_threshold"]
        assert b < 0.5
        in_band = (score >= b) & (score < 0.5)
        assert (in_band & (y == oos)).sum() == band["val_oos_asked"] <= share * n_oos
        assert band["val_rescued"] == (in_band & (y != oos)).sum()
    # a wider allowance never narrows the band
    widths = [
        choose_band(score, argmax, y, oos, 0.5, s)["confirm_threshold"] for s in (0.05, 0.1, 0.3)
    ]
    assert widths == sorted(widths, reverse=True)


def test_a_share_of_zero_means_no_band():
    y = np.array([0, 1, 2, 2])
    score = np.array([0.9, 0.4, 0.3, 0.1])
    assert choose_band(score, np.array([0, 1, 0, 1]), y, 2, 0.5, 0.0)["confirm_threshold"] is None


def test_no_band_without_out_of_scope_validation_data():
    y = np.array([0, 1, 0, 1])
    score = np.array([0.1, 0.2, 0.9, 0.8])
    band = choose_band(score, y, y, 2, threshold=0.5, max_oos_share=0.1)
    assert band["confirm_threshold"] is None
