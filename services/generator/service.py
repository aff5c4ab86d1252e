"""Request-level logic between the thin routes and the model: validation, the deadline,
batching, metrics."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from services.common.batcher import Batcher
from services.common.errors import DeadlineExceeded, InvalidInput
from services.common.validation import check_text
from services.generator import metrics
from services.generator.config import GeneratorSettings
from services.generator.model import GenerationRequest, GenerationResult, GeneratorModel
from services.generator.schemas import GenerateRequest
from services.generator.text import ReplyDomain


def validate(
    req: GenerateRequest, settings: GeneratorSettings, domain: ReplyDomain
) -> GenerationRequest:
    """Checks beyond the JSON types (those are pydantic's: a non-string slot value is a 422
    there); returns the request the model runs."""
    label_map = domain.label_map
    if req.intent not in label_map.core:
        raise InvalidInput(
            f"intent: unknown core intent {req.intent!r}; the generated ones "
            f"are {label_map.generated}"
        )
    if not label_map.is_generated(req.intent):
        raise InvalidInput(
            f"intent: {req.intent!r} is not answered by the generator (see "
            f"GET /v1/labels on the gateway); generated: {label_map.generated}"
        )
    if req.raw_intent is not None and label_map.raw_to_core.get(req.raw_intent) != req.intent:
        raise InvalidInput(f"raw_intent: {req.raw_intent!r} is not an intent of {req.intent!r}")
    check_text("text", req.text, settings.max_text_chars)
    if len(req.slots) + len(req.facts) > settings.max_slots:
        raise InvalidInput(
            f"slots/facts: {len(req.slots) + len(req.facts)} given, at most {settings.max_slots}"
        )
    for field, given, known in (
        ("slots", req.slots, domain.slot_names),
        ("facts", req.facts, domain.fact_names),
    ):
        for name, value in given.items():
            if name not in known:
                raise InvalidInput(f"{field}: unknown name {name!r}; known: {known}")
            if not value.strip() or len(value) > settings.max_value_chars:
                raise InvalidInput(
                    f"{field}.{name}: must be a non-empty string of at most "
                    f"{settings.max_value_chars} characters"
                )
    max_new = settings.default_max_new_tokens if req.max_new_tokens is None else req.max_new_tokens
    if not 1 <= max_new <= settings.max_new_tokens_limit:
        raise InvalidInput(f"max_new_tokens: must be between 1 and {settings.max_new_tokens_limit}")
    if req.timeout_ms is not None and req.timeout_ms < 1:
        raise InvalidInput("timeout_ms: must be >= 1")
    return GenerationRequest(
        req.intent, req.text, dict(req.slots), dict(req.facts), max_new, req.raw_intent
    )


async def generate(
    req: GenerateRequest,
    settings: GeneratorSettings,
    domain: ReplyDomain,
    batcher: Batcher[GenerationRequest, GenerationResult],
) -> GenerationResult:
    item = validate(req, settings, domain)
    timeout = settings.request_timeout_s
    if req.timeout_ms is not None:
        timeout = min(timeout, req.timeout_ms / 1000)
    try:
        # On timeout wait_for cancels the submission: the batcher skips the cancelled item
        # if it has not started, so an abandoned request costs no model time.
        [result] = await asyncio.wait_for(batcher.submit([item]), timeout)
    except TimeoutError:
        metrics.DEADLINE_EXCEEDED.inc()
        raise DeadlineExceeded(
            f"no reply within {timeout:.3g} s; the generator is busy, "
            "retry later or allow a longer timeout_ms"
        ) from None
    metrics.REPLIES.labels(item.intent, result.source).inc()
    metrics.GENERATED_TOKENS.inc(result.generated_tokens)
    metrics.TOKENS_PER_REPLY.observe(result.generated_tokens)
    return result


def make_batcher(
    model: GeneratorModel, settings: GeneratorSettings, executor: ThreadPoolExecutor | None = None
) -> Batcher:
    if model.decoder is not None and settings.continuous_batching:
        from services.generator.scheduler import ContinuousBatcher

        return ContinuousBatcher(
            model,
            name="generator",
            max_batch_size=settings.max_batch_size,
            max_queue=settings.max_queue,
            executor=executor,
        )

    def run_batch(items: list[GenerationRequest]) -> list[GenerationResult]:
        started = time.perf_counter()
        results = model.respond(items)
        longest = max((r.generated_tokens for r in results), default=0)
        if longest:
            metrics.TIME_PER_TOKEN.observe((time.perf_counter() - started) / longest)
        return results

    return Batcher(
        run_batch,
        name="generator",
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_gap_ms=settings.max_gap_ms,
        max_queue=settings.max_queue,
        executor=executor,
        workers=model.workers,
    )
