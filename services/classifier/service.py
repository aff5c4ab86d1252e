"""Request-level logic between the thin routes and the model: validation, batching, metrics."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from services.classifier import metrics
from services.classifier.config import ClassifierSettings
from services.classifier.model import ClassifierModel, Prediction
from services.classifier.schemas import ClassifyRequest
from services.common.batcher import Batcher
from services.common.errors import InvalidInput
from services.common.validation import check_texts

DEFAULT_TOP_K = 3


def validate(req: ClassifyRequest, settings: ClassifierSettings) -> int:
    """Checks beyond the JSON types; returns the effective top_k."""
    check_texts("texts", req.texts, settings.max_texts, settings.max_text_chars)
    top_k = DEFAULT_TOP_K if req.top_k is None else req.top_k
    if not 1 <= top_k <= settings.max_top_k:
        raise InvalidInput(f"top_k: must be between 1 and {settings.max_top_k}")
    return top_k


async def classify(
    req: ClassifyRequest,
    settings: ClassifierSettings,
    batcher: Batcher[tuple[str, int, datetime | None], Prediction],
) -> list[Prediction]:
    top_k = validate(req, settings)
    preds = await batcher.submit([(t, top_k, req.now) for t in req.texts])
    for p in preds:
        metrics.PREDICTIONS.labels(p.intent).inc()
        if p.oos:
            metrics.OOS.inc()
    return preds


def make_batcher(
    model: ClassifierModel, settings: ClassifierSettings, executor: ThreadPoolExecutor | None = None
) -> Batcher:
    return Batcher(
        model.predict_batch,
        name="classifier",
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue,
        executor=executor,
        workers=model.workers,
    )
