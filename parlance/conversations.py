"""`parlance test PACK`: the pack's scripted conversations (tests/*.yml) against a running
gateway, each in its own session; prints the pass rate and every failure with its reason.

A turn that expects an intent and gets the borderline band's question about exactly that
intent ("Do you want to book a flight?") is answered "yes" by the runner, and its
expectations are checked on what follows; the summary counts those conversations (a turn
with `confirming:` tests the question itself and is left alone).

Beyond what a turn expects, every reply the gateway says came from a template is checked
against the pack: it must be one of the templates of the intent it answers (filled in), or
one of the dialogue's own texts. A reply from another intent's templates fails, whatever
its `source` says.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field

from parlance.pack import Pack, load_pack
from parlance.pack.models import Conversation, Turn
from parlance.templates import PLACEHOLDER


@dataclass
class Outcome:
    file: str
    name: str
    failures: list[str] = field(default_factory=list)
    skipped: str | None = None  # why it did not run
    confirmed: int = 0  # turns that needed a "yes" to the borderline band's question

    @property
    def passed(self) -> bool:
        return self.skipped is None and not self.failures


def _pattern(template: str) -> re.Pattern:
    """A template as a regular expression: its placeholders match any value."""
    parts = PLACEHOLDER.split(template)
    # split() alternates literal text and placeholder names
    body = "".join(re.escape(p) if i % 2 == 0 else ".+?" for i, p in enumerate(parts))
    return re.compile(body, re.I | re.S)


class TemplateFit:
    """Whether a template reply belongs to the intent it answers: the whole reply (less the
    dialogue's own additions) must be one of its templates, a placeholder standing for any
    value. A template made almost only of placeholders ("<expression> is <result>.") still
    accepts many sentences; the turn's `reply_contains` says what the reply must say."""

    def __init__(self, pack: Pack):
        self.pack = pack
        self._cache: dict[str, list[re.Pattern]] = {}
        d = pack.dialogue
        texts = [*d.meta.model_dump().values(), d.fallback.capabilities]
        self.dialogue_texts = [_pattern(t) for t in texts if t != "<last_reply>"]

    def patterns(self, raw: str) -> list[re.Pattern]:
        if raw not in self._cache:
            responses = self.pack.responses
            entry = responses.by_raw.get(raw)
            core = self.pack.label_map.core_of(raw)
            own = entry.replies if entry else responses.by_core.get(core, ())
            self._cache[raw] = [_pattern(t) for t in own]
        return self._cache[raw]

    def core_of_reply(self, reply: str) -> str:
        """The reply without what the dialogue adds around an answer: the expiry note
        before it, the form's "Back to what we were doing: ..." after it."""
        d = self.pack.dialogue.form
        reply = reply.strip()
        if reply.startswith(d.expired):
            reply = reply[len(d.expired) :].strip()
        resume = d.resume.split("<prompt>")[0].strip()
        if resume and resume in reply:
            reply = reply[: reply.index(resume)].strip()
        return reply

    def problem(self, raw: str | None, reply: str) -> str | None:
        if raw is None or raw not in self.pack.intents:
            return None
        if raw in self.pack.dialogue.meta_intents.repeat:
            return None  # "repeat" says the previous reply again, whatever it was
        answer = self.core_of_reply(reply)
        # the whole answer must be the template: a short one ("It's <time>.") would match
        # inside almost any other reply
        if any(p.fullmatch(answer) for p in self.patterns(raw)):
            return None
        if any(p.fullmatch(answer) for p in self.dialogue_texts):
            return None
        return f"template reply is not one of {raw!r}'s templates"


def check_turn(turn: Turn, body: dict, fit: TemplateFit | None = None) -> list[str]:
    """What in the gateway's answer differs from what the turn expects."""
    out = []
    intent, state = body["intent"], body["state"]
    reply = body["reply"].lower()
    if turn.intent is not None and intent["raw"] != turn.intent:
        out.append(
            f"intent {intent['raw']!r} ({intent['confidence']:.2f}), expected {turn.intent!r}"
        )
    if turn.form is not None:
        got = state["active_form"] or "none"
        if got != turn.form:
            out.append(f"form {got!r}, expected {turn.form!r}")
    if turn.awaiting is not None and state.get("awaiting") != turn.awaiting:
        out.append(f"awaiting {state.get('awaiting')!r}, expected {turn.awaiting!r}")
    if turn.confirming is not None and state.get("pending_intent") != turn.confirming:
        out.append(f"confirming {state.get('pending_intent')!r}, expected {turn.confirming!r}")
    slots = {**state.get("slots", {}), **body.get("slots", {})}
    for name, value in turn.slots.items():
        if slots.get(name, "").lower() != value.lower():
            out.append(f"slot {name} = {slots.get(name)!r}, expected {value!r}")
    for text in turn.reply_contains:
        if text.lower() not in reply:
            out.append(f"reply lacks {text!r}")
    for text in turn.reply_excludes:
        if text.lower() in reply:
            out.append(f"reply has {text!r}")
    if turn.source is not None and body["source"] != turn.source:
        out.append(f"source {body['source']!r}, expected {turn.source!r}")
    if fit is not None and body["source"] == "template":
        problem = fit.problem(body.get("reply_intent"), body["reply"])
        if problem:
            out.append(problem)
    return out


@dataclass
class RunOptions:
    generator: str = "up"  # up | down: which conversations apply
    intents: frozenset[str] | None = None  # the classifier's intents, when it has a subset
    idle_s: float | None = None  # the gateway's form idle timeout; None: skip idle turns


def skip_reason(conv: Conversation, opts: RunOptions) -> str | None:
    if conv.generator is not None and conv.generator != opts.generator:
        return f"needs the generator {conv.generator}"
    if opts.idle_s is None and any(t.idle for t in conv.turns):
        return "needs --form-idle-s"
    if opts.intents is not None:
        needed = {x for t in conv.turns for x in (t.intent, t.confirming) if x and x != "oos"}
        lacking = sorted(needed - opts.intents)
        if lacking:
            return f"the classifier lacks {lacking}"
    return None


def run_one(
    client, rel: str, conv: Conversation, fit: TemplateFit, opts: RunOptions | None = None
) -> Outcome:
    opts = opts or RunOptions()
    outcome = Outcome(rel, conv.name)
    session = f"test-{uuid.uuid4().hex[:12]}"
    for i, turn in enumerate(conv.turns):
        if turn.idle:
            time.sleep(float(opts.idle_s or 0) + 1.0)
        r = client.post("/v1/chat", json={"session_id": session, "text": turn.user})
        if r.status_code != 200:
            outcome.failures.append(
                f"turn {i + 1} {turn.user!r}: HTTP {r.status_code} {r.text[:200]}"
            )
            break
        body = r.json()
        pending = body["state"].get("pending_intent")
        if turn.intent is not None and turn.confirming is None and pending == turn.intent:
            # The band asked "Do you want to ...?" about the very intent expected: the user
            # says yes, and the turn's expectations hold for what follows.
            r = client.post("/v1/chat", json={"session_id": session, "text": "yes"})
            if r.status_code != 200:
                outcome.failures.append(f"turn {i + 1} 'yes': HTTP {r.status_code}")
                break
            body = r.json()
            body["intent"] = {**body["intent"], "raw": pending}
            outcome.confirmed += 1
        problems = check_turn(turn, body, fit)
        if opts.generator == "down" and body["source"] == "generator":
            problems.append("the generator answered, but it should be down")
        if problems:
            outcome.failures.append(
                f"turn {i + 1} {turn.user!r} -> {body['reply']!r}: " + "; ".join(problems)
            )
            break  # later turns depend on this one
    return outcome


def run_all(
    pack_ref, url: str, api_key: str | None = None, opts: RunOptions | None = None
) -> list[Outcome]:
    import httpx

    opts = opts or RunOptions()
    pack = load_pack(pack_ref)
    fit = TemplateFit(pack)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    outcomes = []
    with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
        for rel, doc in pack.conversations.items():
            for conv in doc.conversations:
                reason = skip_reason(conv, opts)
                if reason:
                    outcomes.append(Outcome(rel, conv.name, skipped=reason))
                else:
                    outcomes.append(run_one(client, rel, conv, fit, opts))
    return outcomes


def summary(outcomes: list[Outcome]) -> tuple[int, int, int]:
    """(passed, failed, skipped)."""
    ran = [o for o in outcomes if o.skipped is None]
    passed = sum(o.passed for o in ran)
    return passed, len(ran) - passed, len(outcomes) - len(ran)


def confirmed(outcomes: list[Outcome]) -> int:
    """How many passed conversations needed a "yes" to a confirmation question."""
    return sum(1 for o in outcomes if o.passed and o.confirmed)


def run_conversations(
    pack_ref, url: str, api_key: str | None = None, opts: RunOptions | None = None
) -> int:
    outcomes = run_all(pack_ref, url, api_key, opts)
    if not outcomes:
        print("no conversations in the pack's tests/ folder")
        return 1
    for o in outcomes:
        if o.skipped is None and not o.passed:
            print(f"FAIL {o.file}: {o.name}\n     " + "\n     ".join(o.failures))
    for o in outcomes:
        if o.passed and o.confirmed:
            print(f"passed after a confirmation question: {o.file}: {o.name}")
    passed, failed, skipped = summary(outcomes)
    if not passed + failed:
        print(f"no conversation ran ({skipped} skipped)")
        return 1
    reasons = sorted({o.skipped for o in outcomes if o.skipped})
    asked = confirmed(outcomes)
    print(
        f"conversations: {passed} passed, {failed} failed "
        f"({100 * passed / (passed + failed):.1f} %)"
        + (f"; {asked} of the passed needed a 'yes' to a confirmation question" if asked else "")
        + (f"; {skipped} skipped ({'; '.join(reasons)})" if skipped else "")
    )
    return 0 if not failed else 1
