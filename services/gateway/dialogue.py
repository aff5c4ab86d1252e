"""The dialogue policy: one turn, from the classifier's prediction and the session state to
a reply. Plain logic; the routes only load and store the state around it.

Order of decisions:
1. an expired form is dropped (and the user told);
2. inside a form: cancel ("never mind"); at the confirmation, yes / no / maybe; slots found
   in the text fill or correct the form (whatever the classifier thinks the text is); a
   confident unrelated question is answered and the form resumes; otherwise the question
   is asked again;
3. outside a form: an intent with a form starts it (slots in the same text count);
   out of scope or low confidence gets the two-stage fallback (rephrase, then what the
   assistant can do); generated core intents go to the generator with slots and facts (a
   template answers when the generator is down); the rest get the gateway's own replies.
"""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.common.fulfilment import fulfil
from services.common.label_map import LabelMap
from services.common.responses import Responses, TemplateFiller, fill
from services.common.slots import SlotExtractor
from services.gateway import metrics
from services.gateway.config import GatewaySettings
from services.gateway.forms import FormSpec, fill_slots
from services.gateway.upstreams import Upstream, UpstreamError

logger = logging.getLogger(__name__)

_CANCEL = re.compile(r"\b(never ?mind|forget (it|that)|cancel( that| it)?|stop)\b", re.I)
_YES = re.compile(r"^\s*(yes|yeah|yep|yup|sure|ok(ay)?|correct|right|go ahead|do it|"
                  r"please do|confirm(ed)?)\b", re.I)
_NO = re.compile(r"^\s*(no|nope|nah|don'?t|do not|negative)\b", re.I)
_MAYBE = re.compile(r"^\s*(maybe|not sure|perhaps|let me think)\b", re.I)


@dataclass
class Prediction:
    raw: str
    core: str
    confidence: float
    oos: bool


@dataclass
class TurnResult:
    reply: str
    source: str  # generator | template | fulfilment | fallback
    slots: dict[str, str] = field(default_factory=dict)
    form: dict | None = None  # the active form after this turn, for the response


class Dialogue:
    def __init__(self, settings: GatewaySettings, label_map: LabelMap, responses: Responses,
                 forms: dict[str, FormSpec], replies: dict, generator: Upstream,
                 extractor: SlotExtractor | None = None):
        self.settings = settings
        self.label_map = label_map
        self.responses = responses
        self.forms = forms
        self.form_of = {i: f for f in forms.values() for i in f.intents}
        self.replies = replies
        self.generator = generator
        self.extractor = extractor or SlotExtractor()
        self.filler = TemplateFiller(responses)

    # -- one turn ------------------------------------------------------------------------
    async def turn(self, text: str, state: dict, p: Prediction,
                   now: datetime | None = None) -> TurnResult:
        now = now or datetime.now(UTC)
        notes: list[str] = []
        form = state.get("form")
        if form and time.time() - form["updated"] > self.settings.form_idle_s:
            metrics.FORMS.labels(form["name"], "expired").inc()
            state["form"] = form = None
            notes.append(self.replies["form"]["expired"])
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
    async def _in_form(self, text: str, state: dict, form: dict, p: Prediction,
                       now: datetime) -> TurnResult:
        spec = self.forms[form["name"]]
        confident = p.confidence >= self.settings.confidence_threshold and not p.oos
        meta = p.raw if confident and p.core == "dialogue_control" else None
        if meta == "cancel" or _CANCEL.search(text):
            return self._end_form(state, spec, "cancelled", self.replies["form"]["cancelled"])
        filled = fill_slots(spec, text, form["values"], form.get("awaiting"), self.extractor,
                            now)
        if form.get("confirming") and not filled.updates:
            if meta == "yes" or _YES.search(text):
                done = spec.text(spec.done, form["values"])
                return self._end_form(state, spec, "completed", done, source="fulfilment")
            if meta == "no" or _NO.search(text):
                return self._end_form(state, spec, "declined", self.replies["form"]["declined"])
            if meta == "maybe" or _MAYBE.search(text):
                return TurnResult(self.replies["form"]["maybe"], "fulfilment")
        if filled.updates or filled.errors:
            corrected = [k for k in filled.updates if k in form["values"]]
            form["values"].update(filled.updates)
            form["updated"] = time.time()
            if corrected:
                metrics.FORMS.labels(spec.name, "corrected").inc()
            return self._after_filling(spec, form, filled)
        if confident and p.core not in ("dialogue_control", "out_of_scope") \
                and p.raw not in self.form_of:
            # A digression: answer it, then come back to the form.
            answer = await self._answer(text, state, p, now)
            prompt, _ = self._next_step(spec, form)
            resume = fill(self.replies["form"]["resume"], {"prompt": prompt})
            answer.reply = f"{answer.reply} {resume}"
            return answer
        prompt, source = self._next_step(spec, form)
        return TurnResult(fill(self.replies["form"]["reask"], {"prompt": prompt}), source)

    def _after_filling(self, spec: FormSpec, form: dict, filled) -> TurnResult:
        """The next question (or the confirmation), prefixed by why a value was refused."""
        reply, source = self._next_step(spec, form)
        if filled.errors:
            reply = fill(self.replies["form"]["invalid"],
                         {"problem": "; ".join(filled.errors), "prompt": reply})
        return TurnResult(reply, source, dict(filled.updates))

    def _next_step(self, spec: FormSpec, form: dict) -> tuple[str, str]:
        missing = spec.missing(form["values"])
        if missing:
            form["awaiting"], form["confirming"] = missing[0], False
            return spec.slot(missing[0]).prompt, "fulfilment"
        form["awaiting"], form["confirming"] = None, True
        return spec.text(spec.confirm, form["values"]), "fulfilment"

    def _end_form(self, state: dict, spec: FormSpec, event: str, reply: str,
                  source: str = "fulfilment") -> TurnResult:
        metrics.FORMS.labels(spec.name, event).inc()
        state["form"] = None
        return TurnResult(reply, source)

    def _form_view(self, form: dict | None) -> dict | None:
        if not form:
            return None
        spec = self.forms[form["name"]]
        return {"name": spec.name, "slots": dict(form["values"]),
                "missing_slots": spec.missing(form["values"]),
                "awaiting": form.get("awaiting"), "confirming": bool(form.get("confirming"))}

    # -- outside a form ------------------------------------------------------------------
    async def _outside_form(self, text: str, state: dict, p: Prediction,
                            now: datetime) -> TurnResult:
        if p.oos or p.confidence < self.settings.confidence_threshold:
            if p.oos:
                metrics.OOS.inc()
            state["misses"] = state.get("misses", 0) + 1
            stage = "rephrase" if state["misses"] < 2 else "capabilities"
            metrics.FALLBACKS.labels("oos" if p.oos else "low_confidence").inc()
            return TurnResult(self.replies["fallback"][stage], "fallback")
        state["misses"] = 0
        spec = self.form_of.get(p.raw)
        if spec is not None:
            form = {"name": spec.name, "values": {}, "awaiting": None, "confirming": False,
                    "updated": time.time()}
            filled = fill_slots(spec, text, {}, None, self.extractor, now)
            form["values"].update(filled.updates)
            state["form"] = form
            metrics.FORMS.labels(spec.name, "started").inc()
            return self._after_filling(spec, form, filled)
        return await self._answer(text, state, p, now)

    async def _answer(self, text: str, state: dict, p: Prediction,
                      now: datetime) -> TurnResult:
        if self.label_map.is_generated(p.core):
            return await self._generate(text, p, now)
        if p.core == "dialogue_control":
            reply = self.replies["dialogue_control"].get(p.raw, "Okay.")
            return TurnResult(fill(reply, {"last_reply": state.get("last_reply")
                                           or "I haven't said anything yet."}), "template")
        return TurnResult(self.replies["core_intents"].get(
            p.core, self.replies["fallback"]["capabilities"]), "template")

    async def _generate(self, text: str, p: Prediction, now: datetime) -> TurnResult:
        kinds = self.responses.slot_kinds(p.raw)
        slots = {k: s.value for k, s in self.extractor.extract(text, kinds, now).items()}
        facts = fulfil(p.raw, slots, now=now, rng=random.Random(),
                       default_tz=self.settings.default_timezone)
        try:
            out = await self.generator.post("/v1/generate", {
                "intent": p.core, "text": text[:1000], "slots": slots, "facts": facts})
            return TurnResult(out["reply"], "generator", slots)
        except UpstreamError as e:
            logger.warning("generator unavailable, answering from a template: %s", e.reason)
            metrics.FALLBACKS.labels("generator_unavailable").inc()
            reply = self.filler.reply(p.core, text, slots, facts) or \
                self.replies["fallback"]["capabilities"]
            return TurnResult(reply, "template", slots)
