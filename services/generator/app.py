"""create_app(): the generator's settings, lifespan (the model loads in the background,
/readyz turns 200 once it is warmed up) and routes."""

from __future__ import annotations

from fastapi import FastAPI

from services.common.app import build_app, model_lifespan
from services.common.label_map import load_label_map
from services.common.logging import configure_logging
from services.generator import metrics
from services.generator.api import router
from services.generator.config import GeneratorSettings
from services.generator.model import GeneratorModel, read_manifest
from services.generator.service import make_batcher


def create_app(settings: GeneratorSettings | None = None) -> FastAPI:
    settings = settings or GeneratorSettings()
    configure_logging(settings.log_level, settings.log_json)
    # Fail fast on a wrong path, a broken manifest or label map: deployment errors.
    read_manifest(settings.artifact)
    label_map = load_label_map()

    def load() -> GeneratorModel:
        return GeneratorModel(settings.artifact, num_beams=settings.num_beams,
                              device=settings.device, threads=settings.threads,
                              quantize=settings.quantize,
                              compact_vocabulary=settings.compact_vocabulary)

    def on_ready(model: GeneratorModel) -> None:
        info = model.info()
        metrics.MODEL_INFO.info({"version": model.version, "device": info["device"],
                                 "base_model": str(info["base_model"]),
                                 "num_beams": str(info["num_beams"])})

    lifespan = model_lifespan("generator", load,
                              lambda m, ex: make_batcher(m, settings, ex), on_ready)
    app = build_app(title="Parlance generator", version="1", settings=settings,
                    lifespan=lifespan, routers=[router])
    app.state.label_map = label_map
    return app
