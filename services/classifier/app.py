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
from services.common.admin import admin_router
from services.common.app import build_app, model_lifespan
from services.common.logging import configure_logging
from services.common.swap import ModelHost

logger = logging.getLogger("services.classifier")


def swap_refusal(serving: ClassifierModel, candidate: ClassifierModel, options: dict) -> str | None:
    """Why `candidate` may not replace `serving`, or None. With `labels` (a gateway's pack):
    it must predict no label outside them. Without: its labels must be those served, unless
    the caller says the change is wanted (a rollback is: it goes back to what served)."""
    new = set(candidate.labels) - {"oos"}
    wanted = options.get("labels")
    if wanted is not None:
        unknown = sorted(new - set(wanted))
        if unknown:
            return (
                f"the new classifier predicts {len(unknown)} label(s) the pack does not have: "
                f"{', '.join(unknown[:8])}"
            )
        return None
    old = set(serving.labels) - {"oos"}
    if new == old or options.get("allow_label_change") or options.get("rollback"):
        return None
    added = ", ".join(sorted(new - old)[:8]) or "-"
    removed = ", ".join(sorted(old - new)[:8]) or "-"
    return (
        f"the new classifier's labels differ from those served (added: {added}; "
        f"removed: {removed}): a gateway's pack would no longer match. "
        "Update the pack first, then swap with allow_label_change: true"
    )


def create_app(settings: ClassifierSettings | None = None) -> FastAPI:
    settings = settings or ClassifierSettings()
    configure_logging(settings.log_level, settings.log_json)
    # Fail fast on a wrong path or a broken manifest: that is a deployment error.
    ClassifierArtifact.load(settings.artifact)

    def load(artifact: str) -> ClassifierModel:
        return ClassifierModel(
            artifact,
            settings.backend,
            settings.int8_max_drop,
            settings.threads,
            settings.ort_spinning,
            settings.workers,
            ort_spin_between_runs=settings.ort_spin_between_runs,
            timing_batch=settings.max_batch_size if settings.auto_timing else None,
            auto_bf16=settings.auto_bf16,
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

    host = ModelHost(
        "classifier",
        load,
        lambda m, ex: make_batcher(m, settings, ex),
        on_ready,
        check=swap_refusal,
        models_dir=settings.models_dir,
    )
    return build_app(
        title="Parlance classifier",
        version="1",
        settings=settings,
        lifespan=model_lifespan(host, settings.artifact, settings.watch_s),
        routers=[router, admin_router],
    )
