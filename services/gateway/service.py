"""Request-level logic of the gateway: one chat turn (session lock, state, classify, the
dialogue policy, metrics) and the classify pass-through."""

from __future__ import annotations

import logging
import re
import secrets
from datetime import UTC, datetime

from parlance.label_map import LabelMap, LabelMapError
from parlance.review import TurnFacts
from parlance.state import dump_state, load_state
from services.common.errors import InvalidInput, Overloaded, ServiceError, UpstreamUnavailable
from services.common.validation import check_text, check_texts
from services.gateway import metrics
from services.gateway.capture import Recorder
from services.gateway.config import GatewaySettings
from services.gateway.dialogue import Dialogue, Prediction
from services.gateway.schemas import ChatRequest
from services.gateway.sessions import SessionStore
from services.gateway.upstreams import Upstream, UpstreamError

logger = logging.getLogger(__name__)
_SESSION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class UpstreamRejected(ServiceError):
    """The upstream refused the request as invalid: its status and message pass through."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status_code = status
        self.code = code


def _raise_if_overloaded(e: UpstreamError) -> None:
    if e.overloaded:
        metrics.OVERLOADED.inc()
        raise Overloaded(
            f"the {e.upstream} is at capacity; retry shortly", e.retry_after_s
        ) from None


async def classify_one(
    classifier: Upstream,
    label_map: LabelMap,
    text: str,
    now: datetime | None = None,
    top_k: int = 1,
) -> Prediction:
    request: dict = {"texts": [text], "top_k": top_k}
    if now is not None:  # a classifier with a slot tagger reads relative dates against it
        request["now"] = now.isoformat()
    try:
        body = await classifier.post("/v1/classify", request)
    except UpstreamError as e:
        _raise_if_overloaded(e)
        raise UpstreamUnavailable(
            f"the classifier is unavailable ({e.reason}); retry shortly"
        ) from None
    p = body["predictions"][0]
    raw = p["intent"]
    core = _core_of(label_map, raw)
    # A classifier without a borderline band (or an older one) sends no flag: no candidate.
    top = p.get("top_k") or []
    candidate = top[0]["intent"] if p.get("borderline") and top else None
    runner_up = top[1] if len(top) > 1 else None
    return Prediction(
        raw=raw,
        core=core,
        confidence=float(p["confidence"]),
        oos=bool(p["oos"]),
        candidate=candidate,
        entities=_entities(p.get("entities"), len(text)),
        second=runner_up["intent"] if runner_up else None,
        margin=float(top[0]["score"]) - float(runner_up["score"]) if runner_up else None,
        model_version=str((body.get("model") or {}).get("version", "")),
    )


def _core_of(label_map: LabelMap, raw: str) -> str:
    """The core intent of a prediction; a label the pack does not have means the classifier
    now serves a version for another pack (swapped since the gateway last looked: its
    watcher refuses it within seconds), so this turn gets a 503, not an answer."""
    try:
        return label_map.core_of(raw)
    except LabelMapError:
        raise UpstreamUnavailable(
            f"the classifier predicted {raw!r}, which is not a label of the gateway's pack: "
            "its labels no longer match (a new version?); retry shortly"
        ) from None


def _entities(found, length: int) -> tuple[tuple[str, str, int, int], ...]:
    """The classifier's slot spans, those that make sense for the text (an intent-only
    classifier sends none)."""
    out = []
    for e in found or ():
        try:
            start, end = int(e["start"]), int(e["end"])
            entry = (str(e["entity"]), str(e["value"]), start, end)
        except (KeyError, TypeError, ValueError):
            continue
        if 0 <= start < end <= length:
            out.append(entry)
    return tuple(out)


async def chat(
    req: ChatRequest,
    settings: GatewaySettings,
    store: SessionStore,
    dialogue: Dialogue,
    classifier: Upstream,
    label_map: LabelMap,
    label_error: str | None = None,
    recorder: Recorder | None = None,
) -> dict:
    if label_error:
        raise UpstreamUnavailable(label_error)
    check_text("text", req.text, settings.max_text_chars)
    if req.session_id is not None and not _SESSION_ID.match(req.session_id):
        raise InvalidInput("session_id: 1-128 characters of letters, digits and ._:-")
    # Unguessable (a session id is all it takes to continue a conversation), 32 hex digits
    # like the uuid4 it replaces, without building a UUID object.
    session_id = req.session_id or secrets.token_hex(16)
    if settings.log_user_text:
        logger.info("turn", extra={"session_id": session_id, "text": req.text})
    async with store.lock(session_id):
        state, dropped = load_state(await store.get(session_id))
        if dropped:
            logger.warning("session state dropped: %s", dropped, extra={"session_id": session_id})
        # Only a classifier that tags slots is sent the clock (an older one refuses the field).
        now = datetime.now(UTC)
        clock = now if dialogue.tagged_slots else None
        # The capture's margin rule needs the runner-up.
        top_k = 2 if recorder is not None else 1
        prediction = await classify_one(classifier, label_map, req.text, clock, top_k)
        result = await dialogue.turn(req.text, state, prediction, now, session_id=session_id)
        await store.put(session_id, dump_state(state))
    metrics.CHATS.labels(prediction.core, result.source).inc()
    if recorder is not None:
        recorder.offer(
            TurnFacts(
                text=req.text,
                raw_intent=prediction.raw,
                core_intent=prediction.core,
                confidence=prediction.confidence,
                oos=prediction.oos,
                reply_source=result.source,
                events=frozenset(result.events),
                second_intent=prediction.second,
                margin=prediction.margin,
            ),
            prediction.model_version,
        )
    form = result.form
    return {
        "session_id": session_id,
        "reply": result.reply,
        "intent": {
            "raw": prediction.raw,
            "core": prediction.core,
            "confidence": prediction.confidence,
            "oos": prediction.oos,
        },
        "slots": result.slots,
        "reply_intent": result.intent,
        "action": result.action,
        "state": {
            "active_form": form["name"] if form else None,
            "missing_slots": form["missing_slots"] if form else [],
            "slots": form["slots"] if form else {},
            "awaiting": form["awaiting"] if form else None,
            "confirming": form["confirming"] if form else False,
            "pending_intent": state["pending"]["intent"] if state.get("pending") else None,
        },
        "source": result.source,
    }


async def classify(
    body: dict, classifier: Upstream, label_map: LabelMap, settings: GatewaySettings
) -> dict:
    # Checked here too, so an oversized call costs the gateway, not the classifier's queue.
    check_texts("texts", body.get("texts", []), settings.max_texts, settings.max_text_chars)
    try:
        out = await classifier.post("/v1/classify", body)
    except UpstreamError as e:
        _raise_if_overloaded(e)
        if e.response is not None and e.response.status_code < 500:
            try:
                err = e.response.json()["error"]
                raise UpstreamRejected(
                    e.response.status_code, err["code"], err["message"]
                ) from None
            except (ValueError, KeyError, TypeError):
                pass
        raise UpstreamUnavailable(
            f"the classifier is unavailable ({e.reason}); retry shortly"
        ) from None
    for p in out["predictions"]:
        p["core_intent"] = _core_of(label_map, p["intent"])
    return out
