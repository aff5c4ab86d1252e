"""Turning model outputs into predictions: calibration, out-of-scope scores and the decision rule.

Pure numpy, no torch and no FastAPI: training evaluates an artifact with exactly this code and
the classifier service serves with it, so the threshold picked on the validation split means the
same thing in both places.

Every out-of-scope score here is "in-scope-ness": higher means more confidently in scope, and a
query is out of scope when its score is below the artifact's threshold (or when the top class is
the ``oos`` class itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SCORES = ("msp", "energy", "maha", "knn", "msp_maha")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class FeatureStats:
    """What distance-based scores need, fitted on the training split's in-scope features.

    Features are L2-normalised first: the encoder is a sentence-embedding model whose geometry
    is cosine, and normalising makes one shared covariance fit all classes far better.
    """

    class_means: np.ndarray  # (n_inscope_classes, dim)
    precision: np.ndarray  # (dim, dim) inverse of the shared, shrunk covariance
    bank: np.ndarray | None = None  # (n_train, dim) normalised train features, for kNN
    knn_k: int = 10

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        labels: np.ndarray,
        n_inscope: int,
        shrinkage: float = 0.05,
        keep_bank: bool = True,
        knn_k: int = 10,
    ) -> FeatureStats:
        f = l2_normalise(features).astype(np.float64)
        inscope = labels < n_inscope
        f, y = f[inscope], labels[inscope]
        dim = f.shape[1]
        means = np.zeros((n_inscope, dim))
        for c in range(n_inscope):
            members = f[y == c]
            if len(members) == 0:
                raise ValueError(f"class {c} has no training features")
            means[c] = members.mean(axis=0)
        centred = f - means[y]
        cov = centred.T @ centred / max(len(f) - 1, 1)
        # Shrink towards a scaled identity (Ledoit-Wolf style, fixed weight): with ~100
        # examples per class the raw covariance is poorly conditioned in 384 dimensions.
        cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / dim * np.eye(dim)
        return cls(
            class_means=means.astype(np.float32),
            precision=np.linalg.inv(cov).astype(np.float32),
            bank=f.astype(np.float32) if keep_bank else None,
            knn_k=knn_k,
        )

    def mahalanobis(self, features: np.ndarray) -> np.ndarray:
        """Minimum over classes of the squared Mahalanobis distance (smaller = more in scope)."""
        f = l2_normalise(features)
        # (x-m)^T P (x-m) = x^T P x - 2 x^T P m + m^T P m, all classes at once.
        fp = f @ self.precision
        mp = self.class_means @ self.precision
        d = (
            (fp * f).sum(-1)[:, None]
            - 2 * fp @ self.class_means.T
            + (mp * self.class_means).sum(-1)[None, :]
        )
        return d.min(axis=1)

    def knn_similarity(self, features: np.ndarray) -> np.ndarray:
        if self.bank is None:
            raise ValueError("kNN score needs the training feature bank in the artifact")
        sims = l2_normalise(features) @ self.bank.T
        k = min(self.knn_k, sims.shape[1])
        return -np.partition(-sims, k - 1, axis=1)[:, k - 1]

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "class_means": self.class_means,
            "precision": self.precision,
            "knn_k": np.array(self.knn_k),
        }
        if self.bank is not None:
            arrays["bank"] = self.bank.astype(np.float16)  # halves the artifact; cosine is robust
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> FeatureStats:
        bank = arrays["bank"].astype(np.float32) if "bank" in arrays else None
        return cls(
            np.asarray(arrays["class_means"], np.float32),
            np.asarray(arrays["precision"], np.float32),
            bank,
            int(arrays["knn_k"]),
        )


@dataclass
class Scorer:
    """The whole decision rule of a classifier artifact.

    `score` names the out-of-scope score; `threshold` applies to it. `combo` holds the
    standardisation constants for the combined score (fitted on the validation split).
    """

    labels: list[str]
    temperature: float = 1.0
    score: str = "msp"
    threshold: float = 0.0
    stats: FeatureStats | None = None
    combo: dict[str, float] = field(default_factory=dict)
    # Lower edge of the borderline band: a rejected query scoring at least this (top class
    # an intent) is worth a confirmation question. None: no band.
    confirm_threshold: float | None = None

    @property
    def oos_index(self) -> int:
        return self.labels.index("oos")

    def inscope_mask(self) -> np.ndarray:
        mask = np.ones(len(self.labels), dtype=bool)
        mask[self.oos_index] = False
        return mask

    def scores(
        self, logits: np.ndarray, features: np.ndarray | None, name: str | None = None
    ) -> np.ndarray:
        """In-scope-ness of each query under score `name` (default: the artifact's)."""
        name = name or self.score
        logits = np.asarray(logits, dtype=np.float64)
        inscope = logits[:, self.inscope_mask()]
        if name == "msp":
            return softmax(logits, self.temperature)[:, self.inscope_mask()].max(axis=1)
        if name == "energy":
            return self.temperature * logsumexp(inscope / self.temperature)
        if name in ("maha", "knn", "msp_maha"):
            if features is None or self.stats is None:
                raise ValueError(f"score {name!r} needs features and fitted feature statistics")
            if name == "maha":
                return -self.stats.mahalanobis(features)
            if name == "knn":
                return self.stats.knn_similarity(features)
            # msp_maha: the classifier's view and the feature-space view are complementary
            # (one knows decision boundaries, the other density); z-scored on val in-scope
            # queries and averaged.
            a = softmax(logits, self.temperature)[:, self.inscope_mask()].max(axis=1)
            b = -self.stats.mahalanobis(features)
            return 0.5 * (
                (a - self.combo["msp_mean"]) / self.combo["msp_std"]
                + (b - self.combo["maha_mean"]) / self.combo["maha_std"]
            )
        raise ValueError(f"unknown out-of-scope score {name!r}; choose from {SCORES}")

    def fit_combo(self, logits: np.ndarray, features: np.ndarray, is_inscope: np.ndarray) -> None:
        a = softmax(logits, self.temperature)[:, self.inscope_mask()].max(axis=1)[is_inscope]
        b = -self.stats.mahalanobis(features)[is_inscope]
        self.combo = {
            "msp_mean": float(a.mean()),
            "msp_std": float(a.std() + 1e-12),
            "maha_mean": float(b.mean()),
            "maha_std": float(b.std() + 1e-12),
        }

    def predict(
        self, logits: np.ndarray, features: np.ndarray | None = None, top_k: int = 1
    ) -> dict[str, np.ndarray]:
        """Vectorised predictions: label index, calibrated confidence, oos flag, top-k."""
        probs = softmax(logits, self.temperature)
        top = np.argsort(-probs, axis=1)[:, : max(1, top_k)]
        argmax = top[:, 0]
        score = self.scores(logits, features)
        oos = (argmax == self.oos_index) | (score < self.threshold)
        pred = np.where(oos, self.oos_index, argmax)
        borderline = (
            oos & (argmax != self.oos_index) & (score >= self.confirm_threshold)
            if self.confirm_threshold is not None
            else np.zeros_like(oos)
        )
        return {
            "pred": pred,
            "argmax": argmax,
            "confidence": probs[np.arange(len(probs)), argmax],
            "oos": oos,
            "borderline": borderline,
            "score": score,
            "top_k": top,
            "top_k_probs": np.take_along_axis(probs, top, axis=1),
        }

    def to_manifest(self) -> dict:
        return {
            "score": self.score,
            "threshold": float(self.threshold),
            "temperature": float(self.temperature),
            "combo": self.combo,
            "confirm_threshold": self.confirm_threshold,
        }

    @classmethod
    def from_manifest(cls, labels: list[str], ood: dict, stats: FeatureStats | None) -> Scorer:
        return cls(
            labels=list(labels),
            temperature=float(ood["temperature"]),
            score=ood["score"],
            threshold=float(ood["threshold"]),
            stats=stats,
            combo=dict(ood.get("combo") or {}),
            confirm_threshold=ood.get("confirm_threshold"),
        )
