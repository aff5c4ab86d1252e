"""The decision rule shared by training and the service."""

from __future__ import annotations

import numpy as np
import pytest

from services.classifier.scoring import FeatureStats, Scorer

LABELS = ["a", "b", "oos"]


def test_predict_applies_oos_class_and_threshold():
    logits = np.array(
        [
            [5.0, 0.0, 0.0],  # confident a
            [0.0, 0.0, 5.0],  # argmax is the oos class
            [1.0, 0.9, 0.0],
        ]
    )  # unsure between a and b -> below threshold
    s = Scorer(labels=LABELS, temperature=1.0, score="msp", threshold=0.6)
    p = s.predict(logits, top_k=2)
    assert p["pred"].tolist() == [0, 2, 2]
    assert p["oos"].tolist() == [False, True, True]
    assert p["argmax"].tolist() == [0, 2, 0]
    assert p["top_k"].shape == (3, 2)
    assert np.allclose(p["top_k_probs"].sum(1) <= 1.0, True)
    assert p["confidence"][0] == pytest.approx(np.exp(5) / (np.exp(5) + 2))


def test_temperature_softens_confidence():
    logits = np.array([[4.0, 0.0, 0.0]])
    hot = Scorer(labels=LABELS, temperature=1.0).predict(logits)["confidence"][0]
    cool = Scorer(labels=LABELS, temperature=2.0).predict(logits)["confidence"][0]
    assert cool < hot


def test_distance_scores_separate_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    feats = np.concatenate([c + 0.05 * rng.normal(size=(50, 4)) for c in centres])
    labels = np.repeat([0, 1], 50)
    stats = FeatureStats.fit(feats, labels, n_inscope=2, knn_k=3)
    inside = centres + 0.05 * rng.normal(size=(2, 4))
    outside = np.array([[0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    s = Scorer(labels=LABELS, score="maha", stats=stats)
    logits = np.zeros((2, 3))
    assert s.scores(logits, inside).min() > s.scores(logits, outside).max()
    s.score = "knn"
    assert s.scores(logits, inside).min() > s.scores(logits, outside).max()
    # round trip through the artifact's arrays
    again = FeatureStats.from_arrays(stats.to_arrays())
    assert np.allclose(again.mahalanobis(outside), stats.mahalanobis(outside), rtol=1e-5)


def test_unknown_score_and_missing_stats():
    s = Scorer(labels=LABELS, score="maha")
    with pytest.raises(ValueError, match="needs features"):
        s.scores(np.zeros((1, 3)), None)
    s.score = "nope"
    with pytest.raises(ValueError, match="unknown out-of-scope score"):
        s.scores(np.zeros((1, 3)), None)


def test_borderline_flag_marks_rejected_queries_in_the_band():
    labels = ["a", "b", "oos"]
    scorer = Scorer(labels=labels, score="msp", threshold=0.8, confirm_threshold=0.55)
    logits = np.array(
        [
            [5.0, 0.0, 0.0],  # confident: in scope
            [0.9, 0.0, 0.0],  # msp ~0.55-0.8: rejected, in the band
            [0.0, 0.0, 5.0],  # the oos class on top: never borderline
            [0.1, 0.0, 0.0],  # below the band
        ]
    )
    p = scorer.predict(logits)
    assert list(p["oos"]) == [False, True, True, True]
    assert list(p["borderline"]) == [False, True, False, False]
    again = Scorer.from_manifest(labels, scorer.to_manifest(), None)
    assert again.confirm_threshold == 0.55
    assert not Scorer(labels=labels, score="msp", threshold=0.8).predict(logits)["borderline"].any()


def test_band_report_and_accuracy_by_length():
    from training.metrics import band_report, by_length

    oos = 2
    y = np.array([0, 1, 0, 2, 2, 1])
    argmax = np.array([0, 0, 0, 1, 0, 1])
    rejected = np.array([False, True, True, True, True, False])
    borderline = np.array([False, True, True, True, False, False])
    r = band_report(y, argmax, rejected, borderline, oos)
    # in scope: #0 answered, #1 in the band with the wrong top, #2 rescued, #5 answered
    assert (r["rescued"], r["inscope_wrong_top"], r["oos_asked"]) == (1, 1, 1)
    assert r["inscope_accuracy"] == 0.5 and r["inscope_accuracy_with_confirmation"] == 0.75
    assert r["oos_recall"] == 1.0 and r["oos_rejected_without_question"] == 0.5
    texts = ["hi", "book a flight now", "one two three four five six seven", "x", "a b c", "ok"]
    pred = np.where(rejected, oos, argmax)
    rows = {row["words"]: row for row in by_length(texts, y, pred, argmax, oos)}
    assert rows["1-2"]["n_inscope"] == 2 and rows["1-2"]["n_oos"] == 1
    assert rows["1-2"]["inscope_accuracy"] == 1.0 and rows["1-2"]["oos_recall"] == 1.0
    assert rows["3-4"]["n_inscope"] == 1 and rows["3-4"]["inscope_accuracy"] == 0.0
    assert rows["7-9"]["n_inscope"] == 1 and rows["13+"]["n_inscope"] == 0
