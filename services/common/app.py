"""The pieces every service app shares: middleware, error handlers, health and metrics routes.

A service's `create_app()` calls `build_app()` with its lifespan and routers; readiness is
`app.state.ready`, set by the lifespan once the model is loaded and warmed up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response

from services.common.errors import NotReady, error_responses, install_error_handlers
from services.common.metrics import render_latest
from services.common.middleware import RequestLedger, ServiceMiddleware
from services.common.settings import ServiceSettings
from services.common.swap import ModelHost

logger = logging.getLogger(__name__)

health_router = APIRouter(tags=["health"])


@health_router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict:
    return {"status": "ok"}


def require_ready(state) -> None:
    """503 unless the lifespan has loaded and warmed the model (used by every model route)."""
    if getattr(state, "load_failed", False):
        raise NotReady("model failed to load; see the service log")
    if not getattr(state, "ready", False):
        raise NotReady(getattr(state, "not_ready_reason", None) or "model is not loaded yet")


@health_router.get(
    "/readyz",
    summary="Readiness: model loaded and warmed (503 before)",
    responses=error_responses(503),
)
async def readyz(request: Request) -> dict:
    require_ready(request.app.state)
    return {"status": "ready"}


@health_router.get(
    "/ping", summary="SageMaker health check (same as /readyz)", responses=error_responses(503)
)
async def ping(request: Request) -> dict:
    return await readyz(request)


@health_router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    body, content_type = render_latest()
    return Response(body, media_type=content_type)


def build_app(
    *,
    title: str,
    version: str,
    settings: ServiceSettings,
    lifespan,
    routers: Sequence[APIRouter],
    middleware: Sequence[tuple[type, dict]] = (),
) -> FastAPI:
    """`middleware`: (class, options) pairs that run inside the common ServiceMiddleware
    (so their answers still get a request id, the body limit and the HTTP metrics).
    `app.state.ledger` counts the requests taken on and answered, probes aside."""
    app = FastAPI(title=title, version=version, lifespan=lifespan)
    app.state.ready = False
    app.state.settings = settings
    app.state.ledger = RequestLedger()
    install_error_handlers(app)
    app.include_router(health_router)
    for router in routers:
        app.include_router(router)
    for cls, options in middleware:
        app.add_middleware(cls, **options)
    app.add_middleware(
        ServiceMiddleware, max_body_bytes=settings.max_body_bytes, ledger=app.state.ledger
    )
    return app


def model_lifespan(host: ModelHost, artifact: str, watch_s: float = 0.0):
    """The lifespan every model service uses: the model loads and warms up in a background
    task (so /healthz answers at once and /readyz turns 200 only when it can serve), then its
    batcher starts; later versions are swapped in by the admin routes (or by watching the
    models directory). On shutdown the batchers are drained. A load failure leaves the
    process up (liveness) but never ready, with the cause in the log and in every model
    route's 503."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.host = host
        tasks = [asyncio.create_task(host.start(app, artifact))]
        if watch_s > 0 and host.models_dir is not None:
            tasks.append(asyncio.create_task(host.watch(app, watch_s)))
        try:
            yield
        finally:
            app.state.ready = False
            for task in tasks:
                task.cancel()
            await host.stop()
            # uvicorn has drained its connections by now: what a stop cost, in one line
            message, fields = app.state.ledger.line("requests")
            logger.info(message, extra=fields)

    return lifespan


async def ready_model(request: Request) -> tuple[Any, Any]:
    """Route dependency: (model, batcher) once ready, else 503. `async` on purpose: FastAPI
    runs plain `def` dependencies in its thread pool, two hand-offs on the hot path."""
    state = request.app.state
    require_ready(state)
    return state.model, state.batcher


def served_view(request: Request) -> dict:
    """Where the served version came from and when (beside the model's own info)."""
    current = request.app.state.host.current
    if current is None:
        return {}
    return {"artifact": current.artifact, "loaded_at": current.view()["loaded_at"]}


async def app_settings(request: Request) -> Any:
    """Route dependency: the service's settings object."""
    return request.app.state.settings
