"""create_app(): the generator's settings, lifespan (the model loads in the background,
/readyz turns 200 once it is warmed up) and routes."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.common.admin import admin_router
from services.common.app import build_app, model_lifespan
from services.common.logging import configure_logging
from services.common.swap import ModelHost
from services.generator import metrics
from services.generator.api import router
from services.generator.config import GeneratorSettings
from services.generator.model import GeneratorModel, load_domain, read_manifest
from services.generator.service import make_batcher


def create_app(settings: GeneratorSettings | None = None) -> FastAPI:
    settings = settings or GeneratorSettings()
    configure_logging(settings.log_level, settings.log_json)
    # Fail fast on a wrong path, a broken manifest or pack copy: deployment errors.
    read_manifest(settings.artifact)
    domain = load_domain(settings.artifact)
    initial = str(Path(settings.artifact).resolve())

    def load(artifact: str) -> GeneratorModel:
        return GeneratorModel(
            artifact,
            num_beams=settings.num_beams,
            device=settings.device,
            threads=settings.threads,
            quantize=settings.quantize,
            compact_vocabulary=settings.compact_vocabulary,
            backend=settings.backend,
            # the continuous batcher runs one batch, whatever the threads
            workers=1 if settings.continuous_batching else settings.workers,
            # the start-up artifact's domain was read (and checked) above: not again
            domain=domain if artifact == initial else None,
        )

    def on_ready(model: GeneratorModel) -> None:
        info = model.info()
        metrics.MODEL_INFO.info(
            {
                "version": model.version,
                "device": info["device"],
                "base_model": str(info["base_model"]),
                "num_beams": str(info["num_beams"]),
                "backend": info["backend"],
            }
        )

    host = ModelHost(
        "generator",
        load,
        lambda m, ex: make_batcher(m, settings, ex),
        on_ready,
        models_dir=settings.models_dir,
    )
    app = build_app(
        title="Parlance generator",
        version="1",
        settings=settings,
        lifespan=model_lifespan(host, settings.artifact, settings.watch_s),
        routers=[router, admin_router],
    )
    app.state.domain = domain
    generated = domain.label_map.generated
    default_openapi = app.openapi

    def openapi() -> dict:
        # The valid core intents depend on the artifact's pack: documented as an enum.
        schema = default_openapi()  # built once, then cached by FastAPI
        props = schema["components"]["schemas"]["GenerateRequest"]["properties"]
        props["intent"]["enum"] = generated
        return schema

    app.openapi = openapi
    return app
