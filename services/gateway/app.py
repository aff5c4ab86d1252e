"""create_app(): the gateway's settings, upstream clients, session store, dialogue policy,
readiness (follows the classifier's) and routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from parlance.pack import Pack, load_pack
from parlance.review import CaptureRules, ReviewStore, parse_reasons
from services.common.app import build_app
from services.common.logging import configure_logging
from services.common.middleware import RequestLedger
from services.gateway import metrics, review_api
from services.gateway.actions import WebhookCaller
from services.gateway.api import API_KEY_SCHEMES, router
from services.gateway.capture import Recorder
from services.gateway.config import GatewaySettings
from services.gateway.dialogue import Dialogue
from services.gateway.security import Guard, GuardMiddleware
from services.gateway.sessions import make_store
from services.gateway.upstreams import Upstream

logger = logging.getLogger("services.gateway")


class LabelMismatch(RuntimeError):
    """The classifier was trained for another assistant than the gateway's pack."""


def label_mismatch(pack: Pack, info: dict) -> str | None:
    """Why the classifier (its /v1/model) cannot serve the pack, or None.

    Refused: labels the pack does not have (the classifier would predict intents the gateway
    cannot answer), or a classifier trained for a pack of another name. A classifier of the
    same pack that knows only some of its intents (trained on a subset, as tests and smoke
    runs do) is served, with a warning."""
    names = info.get("label_names")
    if not isinstance(names, list):
        return None  # an older classifier that does not list them
    trained = (info.get("pack") or {}).get("name")
    unknown = sorted(set(names) - set(pack.labels))
    missing = sorted(set(pack.labels) - set(names))
    if unknown or (trained is not None and trained != pack.name):
        detail = (
            f"labels the pack does not have: {', '.join(unknown[:8])}"
            if unknown
            else f"it knows {len(names) - len(missing)} of the pack's {len(pack.labels)} labels"
        )
        return (
            f"the classifier was trained for {trained or 'an unknown pack'!r}, not for "
            f"pack {pack.name!r} ({detail}). Train a classifier for this pack "
            "(parlance train) or set PARLANCE_PACK to the pack it was trained for."
        )
    if missing:
        logger.warning(
            "the classifier knows %d of the pack's %d labels (trained on a subset)",
            len(names),
            len(pack.labels),
        )
    return None


async def _check_labels(app: FastAPI, again: bool = False) -> bool:
    """Compares the classifier's labels with the pack once the classifier answers, and again
    (`again`) to notice a new version swapped in; a mismatch keeps the gateway unready with
    the reason until a classifier that fits serves."""
    s = app.state
    if s.labels_checked and not again:
        return s.label_error is None
    r = await s.classifier.get("/v1/model", 2.0)
    if r is None:  # not reachable yet: try again next tick
        return s.labels_checked and s.label_error is None
    if r.status_code == 404:  # a classifier that does not describe itself: nothing to check
        s.labels_checked = True
        return True
    if r.status_code != 200:
        return s.labels_checked and s.label_error is None
    try:
        info = r.json()
    except ValueError:  # not a Parlance classifier's answer: nothing to check against
        info = {}
    s.labels_checked = True
    version = info.get("version") if isinstance(info, dict) else None
    if again and version == s.classifier_version:
        return s.label_error is None
    if s.classifier_version is not None and version != s.classifier_version:
        logger.info("the classifier now serves %s (was %s)", version, s.classifier_version)
    s.classifier_version = version
    s.label_error = label_mismatch(s.pack, info)
    # The slots whose list rules only read answers, as chosen on val at training time
    # (a tagger trained on the rules' own silver annotations never beats them).
    slots = info.get("slots_left_to_tagger") if isinstance(info, dict) else None
    # (read again for every new version: an intent-only classifier tags none)
    s.dialogue.tagged_slots = frozenset(
        x for x in (slots if isinstance(slots, list) else []) if isinstance(x, str)
    )
    if s.label_error:
        logger.error("refusing to serve: %s", s.label_error)
    return s.label_error is None


async def _watch(app: FastAPI, period_s: float = 1.0) -> None:
    """Readiness follows the classifier (without it no turn can be answered) and the
    session store; the generator is optional (templates stand in). Polling both upstreams
    also closes their breakers once they answer /readyz again. Also refreshes the
    active-sessions gauge."""
    s = app.state
    tick = 0
    while True:
        # Every few ticks /v1/model again: a classifier swapped to another version is checked.
        classifier_ok = await s.classifier.ready() and await _check_labels(app, again=tick % 3 == 0)
        await s.generator.ready()  # optional, but closes its breaker as soon as it is back
        store_ok = await s.store.ping()
        s.ready = classifier_ok and store_ok
        if s.ready:
            s.not_ready_reason = None
        elif s.label_error or not classifier_ok:
            s.not_ready_reason = s.label_error or "the classifier is not ready"
        else:
            s.not_ready_reason = "the session store is unreachable"
        # Counting sessions is a SCAN over every key with Redis: every 15 s is plenty for
        # a gauge, and keeps the cost flat as sessions grow.
        if tick % 15 == 0:
            with contextlib.suppress(Exception):
                metrics.ACTIVE_SESSIONS.set(await s.store.count())
        tick += 1
        await asyncio.sleep(period_s)


def make_recorder(settings: GatewaySettings, pack: Pack) -> Recorder | None:
    """The recorder that fills the review inbox (when capturing); its store comes later,
    from `_open_inbox`."""
    if not settings.capture:
        return None
    rules = CaptureRules(
        low_confidence=settings.capture_low_confidence,
        margin=settings.capture_margin,
        enabled=parse_reasons(settings.capture_reasons),
    )
    return Recorder(
        None,
        rules,
        (pack.name, pack.version),
        redact_text=settings.capture_redact,
        max_age=timedelta(days=settings.capture_retention_days),
        max_items=settings.capture_max_items,
        queue_size=settings.capture_queue,
    )


async def _open_inbox(app: FastAPI, retry_s: float = 5.0) -> None:
    """Opens (and migrates) the review inbox, retrying while its database is unreachable:
    the inbox is optional, so the gateway serves meanwhile (captures queue, then drop, and
    the review routes answer 503)."""
    s = app.state
    settings = s.settings
    last_error = None
    while True:
        try:
            store = await asyncio.to_thread(ReviewStore, settings.review_db)
            break
        except Exception as e:  # noqa: BLE001 - logged once per distinct error, retried
            if repr(e) != last_error:
                logger.error("review inbox %s unreachable, retrying: %s", settings.review_db, e)
                last_error = repr(e)
            await asyncio.sleep(retry_s)
    s.review = store
    if s.recorder is not None:
        s.recorder.attach(store)
        logger.info("capturing turns for review into %s", store.engine.url.render_as_string())


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    configure_logging(settings.log_level, settings.log_json)
    # Fail fast on a broken pack: a deployment error, with every problem listed.
    pack = load_pack(settings.pack)
    logger.info("assistant pack %s %s (%s)", pack.name, pack.version, pack.root)
    # An action whose ${VAR} is unset is disabled with a warning (GATEWAY_ACTIONS_STRICT:
    # the start fails instead, naming the action and the variable).
    actions = (
        WebhookCaller(
            pack,
            settings.breaker_fail_max,
            settings.breaker_reset_s,
            strict=settings.actions_strict,
        )
        if pack.webhooks
        else None
    )

    def upstream(name: str, url: str, timeout: float) -> Upstream:
        return Upstream(
            name,
            url,
            timeout,
            settings.connect_timeout_s,
            settings.retries,
            settings.breaker_fail_max,
            settings.breaker_reset_s,
            settings.upstream_connections,
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        s = app.state
        s.classifier = upstream(
            "classifier", settings.classifier_url, settings.classifier_timeout_s
        )
        s.generator = upstream("generator", settings.generator_url, settings.generator_timeout_s)
        s.store = make_store(
            settings.redis_url, settings.session_ttl_s, settings.session_lock_timeout_s
        )
        s.pack = pack
        s.label_map = pack.label_map
        s.labels_checked, s.label_error, s.classifier_version = False, None, None
        s.review, s.recorder = None, make_recorder(settings, pack)
        inbox = None
        if settings.capture or settings.admin_key:
            inbox = asyncio.create_task(_open_inbox(app))
            if s.recorder is not None:
                await s.recorder.start()
        s.actions = actions
        s.dialogue = Dialogue(settings, pack, s.generator, actions)
        # A classifier that is already up is checked now, so a wrong one stops the start.
        if await s.classifier.ready() and not await _check_labels(app) and s.label_error:
            raise LabelMismatch(s.label_error)
        watcher = asyncio.create_task(_watch(app))
        try:
            yield
        finally:
            s.ready = False
            watcher.cancel()
            if inbox is not None:
                inbox.cancel()
            closers = [s.classifier.close, s.generator.close, s.store.close]
            if s.recorder is not None:
                closers.append(s.recorder.stop)  # writes the last captures, closes the inbox
            elif s.review is not None:
                closers.append(lambda: asyncio.to_thread(s.review.close))
            if actions is not None:
                closers.append(actions.close)
            for closer in closers:
                with contextlib.suppress(Exception):
                    await closer()
            # uvicorn has drained its connections by now: what a stop cost, in one line.
            message, fields = ledger.line("turns")
            logger.info(message, extra=fields)

    guard = Guard(settings)
    ledger = RequestLedger()
    app = build_app(
        title="Parlance gateway",
        version="1",
        settings=settings,
        lifespan=lifespan,
        routers=[router, review_api.router, review_api.page_router],
        middleware=[
            (
                GuardMiddleware,
                {"guard": guard, "max_in_flight": settings.max_in_flight, "ledger": ledger},
            )
        ],
    )
    app.state.guard = guard
    app.state.not_ready_reason = "waiting for the classifier"
    default_openapi = app.openapi

    def openapi() -> dict:
        schema = default_openapi()  # built once, then cached by FastAPI
        schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(
            API_KEY_SCHEMES
        )
        return schema

    app.openapi = openapi
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
        )
    return app
