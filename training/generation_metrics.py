"""Reply-quality metrics for the generator, computed on filled replies.

Multi-reference: every valid template of an input is a reference (a single random template
would understate quality). chrF is sacrebleu's sentence chrF against all references (the best
one counts), ROUGE-L is rouge-score's `score_multi` (the best F-measure); both averaged over
inputs. The checks are the same functions the service applies (services/generator/text.py),
so "hallucination" here is exactly what the service would have caught.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from parlance.templates import PLACEHOLDER, fill
from services.generator.text import invented_values, is_degenerate
from training.response_data import ResponseExample


def _norm(s: str) -> str:
    return " ".join(re.findall(r"[\w<>]+", s.lower()))


def distinct_n(replies: Sequence[str], n: int = 2) -> float:
    grams = [
        tuple(w[i : i + n])
        for r in replies
        for w in [_norm(r).split()]
        for i in range(len(w) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def reply_metrics(examples: Sequence[ResponseExample], replies: Sequence[str], domain=None) -> dict:
    """`domain`: the artifact's `ReplyDomain` (its pack's entity types and templates; default
    the bundled CLINC150 pack's)."""
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import CHRF

    if len(examples) != len(replies):
        raise ValueError("one reply per example")
    chrf, rouge = CHRF(), rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    n = len(examples)
    totals = {
        "chrf": 0.0,
        "rougeL": 0.0,
        "exact": 0,
        "unfilled": 0,
        "hallucinated": 0,
        "degenerate": 0,
    }
    slotted = faithful = 0
    for ex, reply in zip(examples, replies, strict=True):
        values = {**ex.slots, **ex.facts}
        refs = [fill(r, values) for r in ex.references]
        totals["chrf"] += chrf.sentence_score(reply, refs).score
        totals["rougeL"] += rouge.score_multi(refs, reply)["rougeL"].fmeasure
        totals["exact"] += _norm(reply) in {_norm(r) for r in refs}
        totals["unfilled"] += bool(PLACEHOLDER.search(reply))
        totals["hallucinated"] += bool(invented_values(reply, ex.text, values, domain))
        totals["degenerate"] += is_degenerate(reply)
        if values:
            slotted += 1
            faithful += all(v.lower() in reply.lower() for v in values.values())
    return {
        "examples": n,
        "chrf": round(totals["chrf"] / n, 2),
        "rougeL": round(totals["rougeL"] / n, 4),
        "template_exact_match": round(totals["exact"] / n, 4),
        "slot_fidelity": round(faithful / slotted, 4) if slotted else None,
        "slotted_examples": slotted,
        "hallucination_rate": round(totals["hallucinated"] / n, 4),
        "unfilled_placeholder_rate": round(totals["unfilled"] / n, 4),
        "degenerate_rate": round(totals["degenerate"] / n, 4),
        "distinct_2": round(distinct_n(replies, 2), 4),
        # The same measure on the training-style targets (one sampled template per input).
        "target_distinct_2": round(
            distinct_n([fill(e.target, {**e.slots, **e.facts}) for e in examples], 2), 4
        ),
    }
