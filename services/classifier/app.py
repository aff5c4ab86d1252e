"""create_app() and the lifespan: the model loads in the background, /readyz turns 200 after
it is warmed up, and the batcher is drained on shutdown."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.classifier import metrics
from services.classifier.api import router
from services.classifier.artifact import ClassifierArtifact
from services.classifier.config import ClassifierSettings
from services.classifier.model import ClassifierModel
from services.classifier.service import make_batcher
from services.common.app import build_app
from services.common.logging import configure_logging

logger = logging.getLogger("services.classifier")


async def _load(app: FastAPI, settings: ClassifierSettings) -> None:
    try:
        model = await asyncio.to_thread(ClassifierModel, settings.artifact, settings.backend,
                                        settings.int8_max_drop, settings.threads,
                                        settings.ort_spinning)
        seconds = await asyncio.to_thread(model.warmup)
        batcher = make_batcher(model, settings)
        await batcher.start()
        app.state.model, app.state.batcher = model, batcher
        metrics.MODEL_INFO.info({"version": model.version, "backend": model.backend.name,
                                 "base_model": str(model.info()["base_model"])})
        app.state.ready = True
        logger.info("classifier ready: %s on %s (warm-up %.2f s)", model.version,
                    model.backend.name, seconds)
    except Exception:  # the process stays up (liveness) but never turns ready
        logger.exception("loading the classifier failed")
        app.state.load_failed = True


def create_app(settings: ClassifierSettings | None = None) -> FastAPI:
    settings = settings or ClassifierSettings()
    configure_logging(settings.log_level, settings.log_json)
    # Fail fast on a wrong path or a broken manifest: that is a deployment error.
    ClassifierArtifact.load(settings.artifact)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = asyncio.create_task(_load(app, settings))
        try:
            yield
        finally:
            app.state.ready = False
            loader.cancel()
            batcher = getattr(app.state, "batcher", None)
            if batcher is not None:
                await batcher.stop()

    return build_app(title="Parlance classifier", version="1", settings=settings,
                     lifespan=lifespan, routers=[router])
