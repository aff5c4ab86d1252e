"""The dialogue policy: one turn, from the classifier's prediction and the session state to
a reply. Plain logic; the routes only load and store the state around it.

Order of decisions:
1. an expired form is dropped (and the user told);
2. inside a form: cancel ("never mind"); at the confirmation, yes / no / maybe; slots found
   in the text fill or correct the form (whatever the classifier thinks the text is); a
   confident unrelated question is answered and the form resumes; otherwise the question
   is asked again;
3. outside a form: the answer to a confirmation question first (yes: the intent it asked
   about, with the text that raised it; no: ask to rephrase); an intent with a form starts
   it (slots in the same text count), and so does one whose required slots are missing (a
   one-slot form, answered as that intent once filled); a borderline or low-confidence
   prediction asks to confirm its top intent; out of scope gets the two-stage fallback
   (rephrase, then what the assistant can do); generated core intents go to the generator
   with slots and facts (a template answers when the generator is down); the rest get the
   gateway's own replies.
"""

from __future__ import annotations

import logging
import random
import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime

from parlance.actions import ACTIONS, run_action
from parlance.pack import Pack
from parlance.slots import Slot
from parlance.templates import PLACEHOLDER, TemplateFiller, fill, placeholders
from parlance.webhooks import ActionRequest, IntentRef, submission_key
from services.gateway import metrics
from services.gateway.actions import ActionOutcome, WebhookCaller
from services.gateway.config import GatewaySettings
from services.gateway.forms import FormSpec, fill_slots, forms_of
from services.gateway.upstreams import Upstream, UpstreamError

logger = logging.getLogger(__name__)
# The turn being answered (session id, text, prediction), for the requests of webhook
# actions deep in the policy; a ContextVar is per asyncio task, so concurrent turns of
# other sessions never see each other's.
_TURN: ContextVar[tuple[str, str, Prediction] | None] = ContextVar("parlance_turn", default=None)


@dataclass
class Prediction:
    raw: str
    core: str
    confidence: float
    oos: bool
    # The intent worth confirming when the prediction is borderline (out of scope, but close
    # to the threshold: the classifier's band), else None.
    candidate: str | None = None
    # Slot spans the classifier's tagger found in the text: (slot, value, start, end).
    entities: tuple[tuple[str, str, int, int], ...] = ()
    # The runner-up and how far behind it is (when the classifier was asked for two).
    second: str | None = None
    margin: float | None = None
    model_version: str = ""


@dataclass
class TurnResult:
    reply: str
    source: str  # generator | template | fulfilment | fallback
    slots: dict[str, str] = field(default_factory=dict)
    form: dict | None = None  # the active form after this turn, for the response
    # The raw intent the reply answers: the classifier's, a confirmed one, or that of a
    # one-slot form just filled; None for form prompts and fallbacks.
    intent: str | None = None
    action: dict | None = None  # a webhook action that ran this turn, and its outcome
    # form events: form_answer (the text filled slots), corrected, cancelled
    events: set[str] = field(default_factory=set)


class Dialogue:
    def __init__(
        self,
        settings: GatewaySettings,
        pack: Pack,
        generator: Upstream,
        actions: WebhookCaller | None = None,
    ):
        self.settings = settings
        self.actions = actions
        self.pack = pack
        self.label_map = pack.label_map
        self.forms: dict[str, FormSpec] = forms_of(pack)
        self.form_of = {i: f for f in self.forms.values() for i in f.intents}
        self.texts = pack.dialogue
        # raw intent -> affirm | deny | maybe | cancel | repeat
        self.meta = {
            i: group
            for group, intents in pack.dialogue.meta_intents.model_dump().items()
            for i in intents
        }
        self.patterns = {
            name: re.compile(p, re.I) for name, p in pack.dialogue.patterns.model_dump().items()
        }
        self.generator = generator
        self.extractor = pack.extractor
        # The slots the classifier's tagger finds (its /v1/model, read at start-up).
        self.tagged_slots: frozenset[str] = frozenset()
        self.filler = TemplateFiller(pack.responses)
        # The deployment's settings win over the pack's own defaults.
        self.default_timezone = settings.default_timezone or pack.assistant.default_timezone
        self.confidence_threshold = (
            pack.dialogue.confidence_threshold
            if pack.dialogue.confidence_threshold is not None
            else settings.confidence_threshold
        )

    # -- one turn ------------------------------------------------------------------------
    async def turn(
        self,
        text: str,
        state: dict,
        p: Prediction,
        now: datetime | None = None,
        session_id: str = "",
    ) -> TurnResult:
        token = _TURN.set((session_id, text, p))
        try:
            return await self._turn(text, state, p, now or datetime.now(UTC))
        finally:
            _TURN.reset(token)

    async def _turn(self, text: str, state: dict, p: Prediction, now: datetime) -> TurnResult:
        notes: list[str] = []
        form = state.get("form")
        if form and now.timestamp() - form["updated"] > self.settings.form_idle_s:
            metrics.FORMS.labels(form["name"], "expired").inc()
            state["form"] = form = None
            notes.append(self.texts.form.expired)
        if form:
            result = await self._in_form(text, state, form, p, now)
        else:
            result = await self._outside_form(text, state, p, now)
        if notes:
            result.reply = " ".join([*notes, result.reply])
        state["last_reply"] = result.reply
        result.form = self._form_view(state.get("form"))
        return result

    # -- inside a form -------------------------------------------------------------------
    async def _in_form(
        self, text: str, state: dict, form: dict, p: Prediction, now: datetime
    ) -> TurnResult:
        spec = self.forms[form["name"]]
        meta = self._meta(p)
        # At a confirmation a leading yes/no is the answer, even to "yes, cancel it" (the
        # confirmation of a cancellation); elsewhere "cancel" ends the form.
        answer = self._steer(text, p, ("affirm", "deny")) if form.get("confirming") else None
        if answer is None and self._steer(text, p, ("cancel",)):
            result = self._end_form(state, spec, "cancelled", self.texts.form.cancelled)
            result.events.add("cancelled")
            return result
        filled = fill_slots(
            spec,
            text,
            form["values"],
            form.get("awaiting"),
            self.extractor,
            now,
            *self._learned(text),
        )
        if form.get("failed") and not filled.updates and self._bare_retry(text, p):
            return await self._complete(state, spec, form)  # the same submission again
        if form.get("confirming") and not filled.updates:
            answer = answer or self._steer(text, p, ("maybe",))
            if answer == "affirm":
                return await self._complete(state, spec, form)
            if answer == "deny":
                return self._end_form(state, spec, "declined", self.texts.form.declined)
            if answer == "maybe":
                return TurnResult(self.texts.form.maybe, "fulfilment")
        if filled.updates and self._unrelated_question(text, spec, form, filled, p, now):
            filled.updates.clear()  # "what time is it in Tokyo" mid-booking: not a correction
        if filled.updates or filled.errors:
            corrected = [k for k in filled.updates if k in form["values"]]
            form["values"].update(filled.updates)
            form["updated"] = now.timestamp()
            if filled.updates:
                form["failed"] = False  # other values: another submission
            result = await self._after_filling(state, spec, form, filled, p, now)
            if filled.updates:
                result.events.add("form_answer")  # the form read it: whatever the intent
            if corrected:
                metrics.FORMS.labels(spec.name, "corrected").inc()
                result.events.add("corrected")
            return result
        if self._confident(p) and meta is None and self._answerable_now(text, p.raw, now):
            # A digression: answer it, then come back to the form.
            digression = await self._answer(text, state, p, now)
            prompt, _ = self._next_step(spec, form)
            resume = fill(self.texts.form.resume, {"prompt": prompt})
            digression.reply = f"{digression.reply} {resume}"
            return digression
        if form.get("failed"):
            return TurnResult(self.texts.actions.failed, "action")
        prompt, source = self._next_step(spec, form)
        return TurnResult(fill(self.texts.form.reask, {"prompt": prompt}), source)

    def _unrelated_question(
        self, text: str, spec: FormSpec, form: dict, filled, p: Prediction, now: datetime
    ) -> bool:
        """A turn whose only values would overwrite slots already filled, said without a
        word of correction, that the classifier confidently takes for another question: a
        digression that happens to name a place or a time, not a correction."""
        return (
            self._confident(p)
            and p.raw not in self.meta
            and p.raw not in spec.intents
            and all(k in form["values"] for k in filled.updates)
            and not self.patterns["correction"].search(text)
            and self._answerable_now(text, p.raw, now)
        )

    def _learned(self, text: str) -> tuple[list[Slot], frozenset[str]]:
        """The classifier's slot spans for this turn's text, as slots of the pack's types,
        and the slots its tagger knows; neither for another text (the request that opened a
        form, read again later: the rules read it)."""
        turn = _TURN.get()
        if turn is None or turn[1] != text or turn[2] is None:
            return [], frozenset()
        types = self.pack.slot_types
        learned = [
            Slot(types[name], value, start, end, name)
            for name, value, start, end in turn[2].entities
            if name in types
        ]
        return learned, self.tagged_slots

    def _answerable_now(self, text: str, raw: str, now: datetime) -> bool:
        """Whether `raw` can be answered in this turn without a form of its own (a digression
        does not open a second form)."""
        spec = self.form_of.get(raw)
        if spec is None:
            return True
        if spec.answer_intent is None:
            return False
        filled = fill_slots(spec, text, {}, None, self.extractor, now, *self._learned(text))
        return not spec.missing(filled.updates)

    async def _after_filling(
        self, state: dict, spec: FormSpec, form: dict, filled, p: Prediction, now: datetime
    ) -> TurnResult:
        """The next question (or the confirmation), prefixed by why a value was refused; a
        form without a confirmation completes as soon as its last slot is filled (a
        one-slot form by answering its intent)."""
        if not spec.missing(form["values"]) and spec.confirm is None and not filled.errors:
            if spec.answer_intent is not None:
                return await self._answer_form(state, spec, form, p, now)
            result = await self._complete(state, spec, form)
            result.slots = dict(filled.updates)
            return result
        reply, source = self._next_step(spec, form)
        if filled.errors:
            reply = fill(
                self.texts.form.invalid, {"problem": "; ".join(filled.errors), "prompt": reply}
            )
        return TurnResult(reply, source, dict(filled.updates))

    async def _answer_form(
        self, state: dict, spec: FormSpec, form: dict, p: Prediction, now: datetime
    ) -> TurnResult:
        """A filled one-slot form: its intent answered for the request that opened it, with
        the values collected."""
        metrics.FORMS.labels(spec.name, "completed").inc()
        state["form"] = None
        raw = spec.answer_intent
        asked = Prediction(raw, self.label_map.core_of(raw), p.confidence, False)
        return await self._answer(form.get("text") or "", state, asked, now, form["values"])

    async def _complete(self, state: dict, spec: FormSpec, form: dict) -> TurnResult:
        """A confirmed (or confirmation-free) form: submitted to its webhook action when it
        has one, else completed with its `done` text."""
        if spec.action is None or self.actions is None:
            done = spec.text(spec.done, form["values"])
            return self._end_form(state, spec, "completed", done, source="fulfilment")
        session_id, text, p = _TURN.get() or ("", "", None)
        if form.get("intent"):
            # the request names the intent that opened the form, not this turn's "yes"
            raw = form["intent"]
            p = Prediction(raw, self.label_map.core_of(raw), form.get("confidence") or 0.0, False)
        key = submission_key(session_id, form.get("id") or "", form["values"])
        out = await self._call(spec.action, key, spec.name, dict(form["values"]), p, text)
        view = out.view(spec.action)
        names = {s.name for s in spec.slots}
        if out.status == "ok":
            values = {**form["values"], **out.slots, **out.facts}
            reply = out.reply or spec.text(spec.done, values)
            if PLACEHOLDER.search(reply):
                # the back-end acted but left out a fact the done text needs
                logger.warning("action %s answered without %s", spec.action, placeholders(reply))
                reply = self.texts.actions.done
            result = self._end_form(state, spec, "completed", reply, source="action")
            result.action = view
            return result
        if out.status == "error":
            # The back-end refused ("insufficient funds"): say why and ask again, for the
            # slot it names, else for the confirmation.
            form["failed"] = False
            form["id"] = uuid.uuid4().hex[:16]  # what follows is another submission
            form["values"].update({k: v for k, v in out.slots.items() if k in names})
            if out.error.slot in names:
                form["values"].pop(out.error.slot, None)
            prompt, _ = self._next_step(spec, form)
            metrics.FORMS.labels(spec.name, "refused").inc()
            return TurnResult(f"{out.error.message} {prompt}".strip(), "action", action=view)
        # Not reached, timed out, or nonsense: the form keeps every value, and "try again"
        # resubmits with the same idempotency key.
        form["failed"] = True
        metrics.FORMS.labels(spec.name, "action_failed").inc()
        return TurnResult(self.texts.actions.failed, "action", action=view)

    async def _call(
        self,
        action: str,
        key: str | None,
        form: str | None,
        slots: dict[str, str],
        p: Prediction | None,
        text: str,
    ) -> ActionOutcome:
        """`key`: the call's idempotency key (None: a new one, for a one-off call)."""
        refused = self.actions.refusal(action)
        if refused is not None:
            return refused  # nothing to send: no request built, no key drawn
        key = key or uuid.uuid4().hex
        session_id = (_TURN.get() or ("",))[0]
        intent = (
            IntentRef(raw=p.raw, core=p.core, confidence=p.confidence)
            if p is not None
            else IntentRef(raw="", core="", confidence=0.0)
        )
        request = ActionRequest(
            action=action,
            idempotency_key=key,
            session_id=session_id,
            text=text,
            intent=intent,
            form=form,
            slots=slots,
            pack={"name": self.pack.name, "version": self.pack.version},
        )
        return await self.actions.call(action, request)

    def _next_step(self, spec: FormSpec, form: dict) -> tuple[str, str]:
        missing = spec.missing(form["values"])
        if missing:
            form["awaiting"], form["confirming"] = missing[0], False
            return spec.slot(missing[0]).prompt, "fulfilment"
        form["awaiting"], form["confirming"] = None, True
        return spec.text(spec.confirm or "", form["values"]), "fulfilment"

    def _end_form(
        self, state: dict, spec: FormSpec, event: str, reply: str, source: str = "fulfilment"
    ) -> TurnResult:
        metrics.FORMS.labels(spec.name, event).inc()
        state["form"] = None
        return TurnResult(reply, source)

    def _form_view(self, form: dict | None) -> dict | None:
        if not form:
            return None
        spec = self.forms[form["name"]]
        return {
            "name": spec.name,
            "slots": dict(form["values"]),
            "missing_slots": spec.missing(form["values"]),
            "awaiting": form.get("awaiting"),
            "confirming": bool(form.get("confirming")),
        }

    # -- outside a form ------------------------------------------------------------------
    async def _outside_form(
        self, text: str, state: dict, p: Prediction, now: datetime
    ) -> TurnResult:
        pending = state.get("pending")
        state["pending"] = None
        if pending is not None and now.timestamp() - pending["asked"] > self.settings.form_idle_s:
            pending = None  # a question left unanswered as long as a form may idle is gone
        if pending is not None:
            answer = self._steer(text, p, ("affirm", "deny"))
            if answer == "affirm":
                # Continue as if the intent had been understood in the first place.
                raw = pending["intent"]
                metrics.CONFIRMATIONS.labels("affirmed").inc()
                text = pending["text"]
                p = Prediction(raw, self.label_map.core_of(raw), pending["confidence"], False)
                return await self._understood(text, state, p, now)
            if answer == "deny":
                metrics.CONFIRMATIONS.labels("denied").inc()
                if not (self._confident(p) and p.raw not in self.meta):
                    state["misses"] = state.get("misses", 0) + 1
                    return TurnResult(self.texts.fallback.confirm_denied, "fallback")
                # "no, what are your opening hours?": the new request is answered
            else:
                metrics.CONFIRMATIONS.labels("ignored").inc()
        if p.oos or p.confidence < self.confidence_threshold:
            candidate = p.candidate if p.oos else p.raw
            if (
                candidate is not None
                and candidate in self.pack.intents
                and candidate not in self.meta
            ):
                state["pending"] = {
                    "intent": candidate,
                    "text": text,
                    "confidence": p.confidence,
                    "asked": now.timestamp(),
                }
                metrics.CONFIRMATIONS.labels("asked").inc()
                return TurnResult(self._confirm_question(candidate), "fallback")
            if p.oos:
                metrics.OOS.inc()
            state["misses"] = state.get("misses", 0) + 1
            stage = "rephrase" if state["misses"] < 2 else "capabilities"
            metrics.FALLBACKS.labels("oos" if p.oos else "low_confidence").inc()
            return TurnResult(getattr(self.texts.fallback, stage), "fallback")
        return await self._understood(text, state, p, now)

    def _bare_retry(self, text: str, p: Prediction) -> bool:
        """ "try again", "yes", "ok": a resubmission; not a sentence that merely contains
        "again" ("what are your hours again?")."""
        if self.patterns["retry"].search(text) and len(text.split()) <= 4:
            return True
        if self._meta(p) == "affirm":
            return True
        return bool(self.patterns["affirm"].search(text)) and len(text.split()) <= 3

    def _confident(self, p: Prediction) -> bool:
        return p.confidence >= self.confidence_threshold and not p.oos

    def _meta(self, p: Prediction) -> str | None:
        """The meta group (affirm, deny, maybe, cancel, repeat) of a confident prediction."""
        return self.meta.get(p.raw) if self._confident(p) else None

    def _steer(self, text: str, p: Prediction, groups: tuple[str, ...]) -> str | None:
        """The first of `groups` that the turn says: by the classifier's meta intent, or by
        the pack's pattern for it (short answers such as "yep" need no classifier)."""
        meta = self._meta(p)
        return next(
            (
                g
                for g in groups
                if meta == g or (g in self.patterns and self.patterns[g].search(text))
            ),
            None,
        )

    def _confirm_question(self, intent: str) -> str:
        what = self.pack.intents[intent].description or intent.replace("_", " ")
        return fill(self.texts.fallback.confirm, {"intent": what})

    async def _understood(self, text: str, state: dict, p: Prediction, now: datetime) -> TurnResult:
        """An intent taken as understood: its form, or its answer."""
        state["misses"] = 0
        spec = self.form_of.get(p.raw)
        if spec is not None:
            filled = fill_slots(spec, text, {}, None, self.extractor, now, *self._learned(text))
            if spec.answer_intent is not None and not spec.missing(filled.updates):
                # Every required slot is in the request: no question to ask.
                return await self._answer(text, state, p, now, filled.updates)
            form = {
                "name": spec.name,
                "values": dict(filled.updates),
                "awaiting": None,
                "confirming": False,
                "updated": now.timestamp(),
                "text": text if spec.answer_intent is not None else None,
                "id": uuid.uuid4().hex[:16],
                "intent": p.raw,
                "confidence": p.confidence,
            }
            state["form"] = form
            metrics.FORMS.labels(spec.name, "started").inc()
            return await self._after_filling(state, spec, form, filled, p, now)
        return await self._answer(text, state, p, now)

    async def _answer(
        self,
        text: str,
        state: dict,
        p: Prediction,
        now: datetime,
        known: dict[str, str] | None = None,
    ) -> TurnResult:
        meta = self.meta.get(p.raw)
        if meta is not None:
            reply = getattr(self.texts.meta, meta)
            return TurnResult(
                fill(
                    reply, {"last_reply": state.get("last_reply") or "I haven't said anything yet."}
                ),
                "template",
                intent=p.raw,
            )
        slots, facts = self._slots_and_facts(text, p.raw, now, known or {})
        intent = self.pack.intents.get(p.raw)
        view = None
        if intent is not None and intent.action in self.pack.webhooks and self.actions:
            # One call per turn; its retries share the key.
            out = await self._call(intent.action, None, None, dict(slots), p, text)
            view = out.view(intent.action)
            if out.status != "ok":
                reply = out.error.message if out.error else self.texts.actions.unavailable
                return TurnResult(reply, "action", slots, intent=p.raw, action=view)
            slots.update({k: v for k, v in out.slots.items() if k in intent.slots})
            facts.update(out.facts)
            if out.reply:
                return TurnResult(out.reply, "action", slots, intent=p.raw, action=view)
        if self.label_map.is_generated(p.core):
            result = await self._generate(text, p, slots, facts)
            result.action = view
            return result
        reply = self.filler.reply_for(p.raw, p.core, text, slots, facts)
        source = "fulfilment" if facts and reply else "template"
        if view is not None and reply:
            source = "action"  # the back-end's facts are in the template
        return TurnResult(
            reply or self.texts.fallback.capabilities, source, slots, intent=p.raw, action=view
        )

    def _slots_and_facts(
        self, text: str, raw: str, now: datetime, known: dict[str, str]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The intent's slots read from the text (values a form collected win), and the facts
        its action computes from them."""
        intent = self.pack.intents.get(raw)
        if intent is None:
            return dict(known), {}
        slots = {**self.pack.extract_slots(text, intent.slots, now, *self._learned(text)), **known}
        if intent.action not in ACTIONS:
            return slots, {}  # no action, or a webhook (called by _answer)
        facts = run_action(
            intent.action,
            slots,
            self.pack.slot_types,
            now=now,
            rng=random.Random(),
            default_tz=self.default_timezone,
        )
        return slots, facts

    async def _generate(
        self, text: str, p: Prediction, slots: dict[str, str], facts: dict[str, str]
    ) -> TurnResult:
        try:
            out = await self.generator.post(
                "/v1/generate",
                {
                    "intent": p.core,
                    "raw_intent": p.raw,
                    "text": text[:1000],
                    "slots": slots,
                    "facts": facts,
                },
            )
            # The generator answers from a template itself when its model's reply fails a
            # check: that is what the user got, and what the response says.
            source = "template" if out.get("source") == "template" else "generator"
            return TurnResult(out["reply"], source, slots, intent=p.raw)
        except UpstreamError as e:
            logger.warning("generator unavailable, answering from a template: %s", e.reason)
            metrics.FALLBACKS.labels("generator_unavailable").inc()
            reply = (
                self.filler.reply_for(p.raw, p.core, text, slots, facts)
                or self.texts.fallback.capabilities
            )
            return TurnResult(reply, "template", slots, intent=p.raw)
