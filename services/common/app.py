"""The pieces every service app shares: middleware, error handlers, health and metrics routes.

A service's `create_app()` calls `build_app()` with its lifespan and routers; readiness is
`app.state.ready`, set by the lifespan once the model is loaded and warmed up.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI, Request, Response

from services.common.errors import NotReady, install_error_handlers
from services.common.metrics import render_latest
from services.common.middleware import ServiceMiddleware
from services.common.settings import ServiceSettings

health_router = APIRouter(tags=["health"])


@health_router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict:
    return {"status": "ok"}


def require_ready(state) -> None:
    """503 unless the lifespan has loaded and warmed the model (used by every model route)."""
    if getattr(state, "load_failed", False):
        raise NotReady("model failed to load; see the service log")
    if not getattr(state, "ready", False):
        raise NotReady("model is not loaded yet")


@health_router.get("/readyz", summary="Readiness: model loaded and warmed (503 before)")
async def readyz(request: Request) -> dict:
    require_ready(request.app.state)
    return {"status": "ready"}


@health_router.get("/ping", summary="SageMaker health check (same as /readyz)")
async def ping(request: Request) -> dict:
    return await readyz(request)


@health_router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    body, content_type = render_latest()
    return Response(body, media_type=content_type)


def build_app(*, title: str, version: str, settings: ServiceSettings, lifespan,
              routers: Sequence[APIRouter]) -> FastAPI:
    app = FastAPI(title=title, version=version, lifespan=lifespan)
    app.state.ready = False
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(health_router)
    for router in routers:
        app.include_router(router)
    app.add_middleware(ServiceMiddleware, max_body_bytes=settings.max_body_bytes)
    return app
