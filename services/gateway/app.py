"""create_app(): the gateway's settings, upstream clients, session store, dialogue policy,
readiness (follows the classifier's) and routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from services.common.app import build_app
from services.common.files import read_yaml_mapping
from services.common.label_map import clinc_raw_intents, load_label_map
from services.common.logging import configure_logging
from services.common.responses import default_responses
from services.gateway import metrics
from services.gateway.api import router
from services.gateway.config import GatewaySettings
from services.gateway.dialogue import Dialogue
from services.gateway.forms import RESOURCES, FormsError, load_forms
from services.gateway.security import Guard, GuardMiddleware
from services.gateway.sessions import make_store
from services.gateway.upstreams import Upstream

logger = logging.getLogger("services.gateway")


async def _watch(app: FastAPI, period_s: float = 1.0) -> None:
    """Readiness follows the classifier (without it no turn can be answered) and the
    session store; the generator is optional (templates stand in). Polling both upstreams
    also closes their breakers once they answer /readyz again. Also refreshes the
    active-sessions gauge."""
    s = app.state
    tick = 0
    while True:
        classifier_ok = await s.classifier.ready()
        await s.generator.ready()  # optional, but closes its breaker as soon as it is back
        store_ok = await s.store.ping()
        s.ready = classifier_ok and store_ok
        s.not_ready_reason = None if s.ready else (
            "the classifier is not ready" if not classifier_ok else
            "the session store is unreachable")
        # Counting sessions is a SCAN over every key with Redis: every 15 s is plenty for
        # a gauge, and keeps the cost flat as sessions grow.
        if tick % 15 == 0:
            with contextlib.suppress(Exception):
                metrics.ACTIVE_SESSIONS.set(await s.store.count())
        tick += 1
        await asyncio.sleep(period_s)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    configure_logging(settings.log_level, settings.log_json)
    # Fail fast on a broken label map, templates or forms: deployment errors.
    label_map = load_label_map()
    responses = default_responses()
    forms = load_forms(raw_intents=clinc_raw_intents())
    replies = read_yaml_mapping(RESOURCES / "replies.yaml", FormsError, "gateway replies",
                                "core_intents")

    def upstream(name: str, url: str, timeout: float) -> Upstream:
        return Upstream(name, url, timeout, settings.connect_timeout_s, settings.retries,
                        settings.breaker_fail_max, settings.breaker_reset_s,
                        settings.upstream_connections)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        s = app.state
        s.classifier = upstream("classifier", settings.classifier_url,
                                settings.classifier_timeout_s)
        s.generator = upstream("generator", settings.generator_url,
                               settings.generator_timeout_s)
        s.store = make_store(settings.redis_url, settings.session_ttl_s,
                             settings.session_lock_timeout_s)
        s.label_map = label_map
        s.dialogue = Dialogue(settings, label_map, responses, forms, replies, s.generator)
        watcher = asyncio.create_task(_watch(app))
        try:
            yield
        finally:
            s.ready = False
            watcher.cancel()
            for closer in (s.classifier.close, s.generator.close, s.store.close):
                with contextlib.suppress(Exception):
                    await closer()

    guard = Guard(settings)
    app = build_app(title="Parlance gateway", version="1", settings=settings,
                    lifespan=lifespan, routers=[router],
                    middleware=[(GuardMiddleware, {"guard": guard,
                                                   "max_in_flight": settings.max_in_flight})])
    app.state.guard = guard
    app.state.not_ready_reason = "waiting for the classifier"
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type",
                                          "X-Request-ID"])
    return app
