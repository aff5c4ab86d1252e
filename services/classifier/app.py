"""create_app(): the classifier's settings, lifespan (the model loads in the background,
/readyz turns 200 once it is warmed up) and routes."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from services.classifier import metrics
from services.classifier.api import router
from services.classifier.artifact import ClassifierArtifact
from services.classifier.config import ClassifierSettings
from services.classifier.model import ClassifierModel
from services.classifier.service import make_batcher
from services.common.app import build_app, model_lifespan
from services.common.logging import configure_logging

logger = logging.getLogger("services.classifier")


def create_app(settings: ClassifierSettings | None = None) -> FastAPI:
    settings = settings or ClassifierSettings()
    configure_logging(settings.log_level, settings.log_json)
    # Fail fast on a wrong path or a broken manifest: that is a deployment error.
    ClassifierArtifact.load(settings.artifact)

    def load() -> ClassifierModel:
        return ClassifierModel(
            settings.artifact,
            settings.backend,
            settings.int8_max_drop,
            settings.threads,
            settings.ort_spinning,
        )

    def on_ready(model: ClassifierModel) -> None:
        metrics.MODEL_INFO.info(
            {
                "version": model.version,
                "backend": model.backend.name,
                "base_model": str(model.info()["base_model"]),
            }
        )
        logger.info("classifier backend: %s", model.backend.name)

    lifespan = model_lifespan(
        "classifier", load, lambda m, ex: make_batcher(m, settings, ex), on_ready
    )
    return build_app(
        title="Parlance classifier",
        version="1",
        settings=settings,
        lifespan=lifespan,
        routers=[router],
    )
