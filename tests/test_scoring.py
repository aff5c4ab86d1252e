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
