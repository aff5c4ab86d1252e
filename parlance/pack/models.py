"""The files of an assistant pack, one pydantic model per file.

Every model forbids unknown keys, so a misspelt field is an error that names the file and the
entry rather than a setting silently ignored. Cross-file rules (a form that names an unknown
slot, a reply with a placeholder nobody fills, ...) live in `parlance.pack.checks`. The
reference for every field is docs/assistant-packs.md.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=64)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
# The label the classifier gives a query it rejects; no pack may declare an intent of that name.
OOS = "oos"
OUT_OF_SCOPE_CORE = "out_of_scope"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------- assistant.yml


class ExamplesSource(Strict):
    """Examples kept outside the pack (licence or size), read at training time by a named
    loader (`parlance.pack.sources`)."""

    loader: Literal["clinc150"]
    variant: str = "plus"


class OutOfScopeSettings(Strict):
    background: bool | None = Field(
        None,
        description="add the bundled out-of-domain sentences as out-of-scope training "
        "and calibration data; default: only when the pack has none",
    )


class AssistantFile(Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)]
    version: Annotated[str, StringConstraints(min_length=1, max_length=32)] = "1"
    language: Literal["en"] = "en"
    description: str = ""
    examples_from: ExamplesSource | None = None
    default_timezone: str = "UTC"
    out_of_scope: OutOfScopeSettings = OutOfScopeSettings()
    validation_share: float = Field(
        0.15,
        gt=0,
        lt=0.5,
        description="share of each intent's examples held out for "
        "validation when the pack has no validation split",
    )

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v


# ----------------------------------------------------------------- intents.yml


class FormSlot(Strict):
    slot: Name
    prompt: Text
    cues: list[Text] = Field(
        [],
        description="words just before a value that pick this slot among several of the same type",
    )
    accept_number: bool = Field(False, description="a bare number fills this money slot")
    free_text: bool = Field(False, description="when asked for, any answer is the value")
    min: float | None = None
    max: float | None = None


class Intent(Strict):
    description: str = ""
    examples: list[Text] = []
    test_examples: list[Text] = []
    slots: list[Name] = Field(
        [], description="slots read from the user's text for this intent's replies and action"
    )
    action: Name | None = Field(
        None,
        description="a built-in action (parlance.actions) or a webhook action of actions.yml, "
        "whose facts the replies may use",
    )
    generated: bool | None = Field(
        None, description="replies written by the generator; only without core_intents.yml"
    )
    requires: list[FormSlot] = Field(
        [],
        description="slots the intent cannot be answered without: when one is missing, a "
        "form named after the intent asks for it, then the intent is answered",
    )

    @model_validator(mode="after")
    def _requires_are_read(self) -> Intent:
        names = [r.slot for r in self.requires]
        missing = [n for n in names if n not in self.slots]
        if missing:
            raise ValueError(f"required slots must also be listed under 'slots': {missing}")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"slots required twice: {dup}")
        return self


class OutOfScopeExamples(Strict):
    examples: list[Text] = []
    test_examples: list[Text] = []


class ReviewedExamples(Strict):
    """Plain texts (no slot markup: they are what users typed, brackets and all)."""

    examples: list[Text] = []
    test_examples: list[Text] = []


class ReviewedFile(Strict):
    """reviewed.yml: what `parlance review export` added from captured traffic, kept apart
    from intents.yml so that a person's files are never rewritten; training merges it."""

    intents: dict[Name, ReviewedExamples] = {}
    out_of_scope: ReviewedExamples = ReviewedExamples()


class IntentsFile(Strict):
    intents: dict[Name, Intent]
    out_of_scope: OutOfScopeExamples = OutOfScopeExamples()

    @field_validator("intents")
    @classmethod
    def _not_reserved(cls, v: dict[str, Intent]) -> dict[str, Intent]:
        if OOS in v:
            raise ValueError(
                f"{OOS!r} is reserved for out-of-scope queries: put them under 'out_of_scope'"
            )
        if not v:
            raise ValueError("a pack needs at least one intent")
        return v


# ----------------------------------------------------------------- slots.yml


class ListType(Strict):
    """Values with synonyms: canonical value -> other ways users say it."""

    kind: Literal["list"]
    values: dict[Text, list[Text] | None]
    case_sensitive: bool = False

    @field_validator("values", mode="before")
    @classmethod
    def _plain_list(cls, v):
        # `values: [a, b]` is short for values without synonyms
        return {x: None for x in v} if isinstance(v, list) else v


class RegexType(Strict):
    kind: Literal["regex"]
    pattern: str
    value_group: int | str = 0

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        return v


class FreeTextType(Strict):
    """Whatever the user answers when the form asks for this slot."""

    kind: Literal["free_text"]


SlotTypeSpec = Annotated[ListType | RegexType | FreeTextType, Field(discriminator="kind")]


class Slot(Strict):
    type: Name
    description: str = ""


class SlotsFile(Strict):
    types: dict[Name, SlotTypeSpec] = {}
    slots: dict[Name, Slot] = {}


# ----------------------------------------------------------------- core_intents.yml


class CoreIntent(Strict):
    description: str = ""
    generated: bool = False
    intents: list[str] = Field(min_length=1)

    @field_validator("intents", mode="before")
    @classmethod
    def _strings(cls, v):
        # An unquoted yes/no is a boolean in YAML 1.1: say so instead of "not a string".
        if isinstance(v, list) and any(isinstance(x, bool) for x in v):
            raise ValueError("quote yes/no intent names: YAML reads them as true/false")
        return v


class CoreIntentsFile(Strict):
    core_intents: dict[Name, CoreIntent]


# ----------------------------------------------------------------- responses.yml


class ResponsesFile(Strict):
    intents: dict[Name, list[Text]] = Field({}, description="replies per intent")
    core_intents: dict[Name, list[Text]] = Field(
        {}, description="replies per core intent, for its intents that have none"
    )


# ----------------------------------------------------------------- forms.yml


class Form(Strict):
    intents: list[Name] = Field(min_length=1)
    slots: list[FormSlot] = Field(min_length=1)
    confirm: Text | None = None
    done: Text
    distinct: list[tuple[Name, Name]] = []
    action: Name | None = Field(
        None,
        description="a webhook action (actions.yml) called when the form is submitted; "
        "`done` may use the facts it returns",
    )

    @model_validator(mode="after")
    def _unique_slots(self) -> Form:
        names = [s.slot for s in self.slots]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"slots listed twice: {dup}")
        return self


class FormsFile(Strict):
    forms: dict[Name, Form] = {}


# ----------------------------------------------------------------- actions.yml

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class WebhookAction(Strict):
    """An action on the owner's back-end: a signed JSON POST (docs/actions.md). `url` and
    `secret` may use `${VAR}` or `${VAR:-default}`, read from the gateway's environment at
    start, so hosts and keys stay out of the pack."""

    url: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    secret: str | None = Field(
        None, description="HMAC-SHA256 key for the signature, normally `${SOME_VAR}`"
    )
    timeout_s: float = Field(3.0, gt=0, le=60, description="per attempt")
    retries: int = Field(
        1, ge=0, le=5, description="extra attempts after a timeout, 5xx or refused connection"
    )
    facts: list[Name] = Field([], description="facts its reply may carry (templates use them)")
    allow_private_network: bool = Field(
        False,
        description="allow loopback, private and link-local targets (a back-end on the same "
        "host or network); off by default against server-side request forgery",
    )
    description: str = ""

    @field_validator("url", "secret")
    @classmethod
    def _references_close(cls, v: str | None) -> str | None:
        if v is not None and "${" in ENV_REFERENCE.sub("", v):
            raise ValueError("an unclosed or malformed ${VAR} reference")
        return v


class ActionsFile(Strict):
    actions: dict[Name, WebhookAction] = {}


# ----------------------------------------------------------------- dialogue.yml


class MetaIntents(Strict):
    """Which of the pack's intents steer the conversation (mid-form and outside)."""

    affirm: list[str] = []
    deny: list[str] = []
    maybe: list[str] = []
    cancel: list[str] = []
    repeat: list[str] = []


class Patterns(Strict):
    """Regular expressions that recognise the same without the classifier (short answers
    such as "yep" mid-form); English by default."""

    affirm: str = (
        r"^\s*(yes|yeah|yep|yup|sure|ok(ay)?|correct|right|go ahead|do it|"
        r"please do|confirm(ed)?)\b"
    )
    deny: str = r"^\s*(no|nope|nah|don'?t|do not|negative)\b"
    maybe: str = r"^\s*(maybe|not sure|perhaps|let me think)\b"
    cancel: str = r"\b(never ?mind|forget (it|that)|cancel( that| it)?|stop)\b"
    retry: str = r"^\W*(please\s+)?(try (it |that )?again|retry|again|one more time)\b"
    correction: str = (
        r"^\s*(no\b|nope|actually|make (it|that)|change|sorry|i meant|wait)|\binstead\b|"
        r"\brather\b|\bnot\b"
    )


class FallbackTexts(Strict):
    rephrase: Text = "Sorry, I didn't quite get that. Could you say it another way?"
    capabilities: Text = "I'm still not sure what you mean. Could you try asking differently?"
    confirm: Text = Field(
        "Do you want to <intent>?",
        description="the borderline band's question; <intent> is the intent's description "
        "(its name in words when it has none)",
    )
    confirm_denied: Text = "Okay. Could you tell me in other words what you need?"


class FormTexts(Strict):
    cancelled: Text = "Okay, I've cancelled that."
    declined: Text = "Okay, I won't do that. Anything else?"
    expired: Text = "Your earlier request timed out, so let's start over."
    maybe: Text = "No problem. Say yes when you're ready, or cancel."
    resume: Text = "Back to what we were doing: <prompt>"
    reask: Text = "Sorry, I still need this: <prompt>"
    invalid: Text = "That doesn't work: <problem>. <prompt>"


class MetaTexts(Strict):
    """Replies to the meta intents outside a form."""

    affirm: Text = "Okay! What would you like to do?"
    deny: Text = "Alright. Anything else I can help with?"
    maybe: Text = "Take your time. I'm here when you're ready."
    cancel: Text = "There's nothing to cancel right now."
    repeat: Text = "<last_reply>"


class ActionTexts(Strict):
    """What the user hears when the owner's back-end could not be reached (a timeout, an
    error status, a malformed reply, the circuit breaker open)."""

    failed: Text = (
        'Sorry, I couldn\'t complete that just now. Your details are kept: say "try again", '
        "or cancel."
    )
    unavailable: Text = "Sorry, I can't get that right now. Please try again in a moment."
    done: Text = Field(
        "Done.", description="when the back-end acted but its reply lacks a fact `done` uses"
    )


class DialogueFile(Strict):
    meta_intents: MetaIntents = MetaIntents()
    patterns: Patterns = Patterns()
    fallback: FallbackTexts = FallbackTexts()
    form: FormTexts = FormTexts()
    meta: MetaTexts = MetaTexts()
    actions: ActionTexts = ActionTexts()
    confidence_threshold: float | None = Field(None, ge=0, le=1)


# ----------------------------------------------------------------- tests/*.yml


class Turn(Strict):
    user: Text
    intent: str | None = Field(None, description="expected raw intent ('oos' allowed)")
    form: str | None = Field(
        None, description="expected active form after the turn; 'none' for no form"
    )
    awaiting: str | None = None
    slots: dict[str, str] = Field({}, description="expected form slots (a subset)")
    reply_contains: list[str] = []
    reply_excludes: list[str] = []
    source: str | None = None
    confirming: str | None = Field(
        None, description="the assistant asks to confirm this intent (the borderline band)"
    )
    idle: bool = Field(
        False, description="the runner waits past the form idle timeout before this turn"
    )


class Conversation(Strict):
    name: Text
    generator: Literal["up", "down"] | None = Field(
        None,
        description="run only while the generator is up, or only in degraded mode (it is "
        "stopped); default: both",
    )
    turns: list[Turn] = Field(min_length=1)


class ConversationsFile(Strict):
    conversations: list[Conversation]
