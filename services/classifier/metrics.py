"""Classifier-specific metrics (HTTP and batcher metrics come from services.common)."""

from __future__ import annotations

from prometheus_client import Counter, Info

from services.common.metrics import PREFIX

# Bounded: 150 intents + oos.
PREDICTIONS = Counter(f"{PREFIX}_classifier_predictions_total", "Predictions by intent", ["intent"])
OOS = Counter(f"{PREFIX}_classifier_oos_total", "Predictions that were out of scope")
MODEL_INFO = Info(f"{PREFIX}_classifier_model", "The served classifier artifact")
