"""Builds the generator's examples from CLINC150 utterances.

For every utterance of a raw intent that maps to a generated core intent (train, val and
test kept apart, exactly as CLINC150 splits them):

    slots   = the shared slot extractor on the text, for the raw intent's slot kinds
    facts   = local fulfilment for the raw intent (time, a calculation, a coin flip, ...)
    target  = one of the raw intent's templates whose placeholders are exactly the
              available slots and facts (seeded choice), delexicalised
    refs    = all such templates: the multi-reference set the evaluation scores against

The clock and the coin/dice are seeded per example, so the same data and seed always give
the same examples (a checksum of them goes into the manifest).

    python -m training.response_data --data-dir ../shared/data/clinc150 --out examples.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from services.common.fulfilment import fulfil
from services.common.label_map import LabelMap, load_label_map
from services.common.responses import Responses, default_responses
from services.common.slots import SlotExtractor
from training.data import ClincData, load_clinc

# Facts such as the current time are computed against a clock that moves from one example
# to the next (seeded), so the model sees many different values around the placeholders.
BASE_CLOCK = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class ResponseExample:
    split: str
    core_intent: str
    raw_intent: str
    text: str
    slots: dict[str, str]
    facts: dict[str, str]
    target: str  # delexicalised reply to learn
    references: list[str]  # every valid delexicalised reply for this input


def build_examples(data: ClincData, responses: Responses | None = None,
                   label_map: LabelMap | None = None, seed: int = 42,
                   splits: tuple[str, ...] = ("train", "val", "test"),
                   max_per_intent: dict[str, int] | None = None,
                   intents: set[str] | None = None) -> dict[str, list[ResponseExample]]:
    """`max_per_intent[split]` caps utterances per raw intent (first N, in file order);
    `intents` restricts to some raw intents (tests train on a subset)."""
    responses = responses or default_responses()
    label_map = label_map or load_label_map()
    extractor = SlotExtractor()
    out: dict[str, list[ResponseExample]] = {}
    for split in splits:
        examples: list[ResponseExample] = []
        seen: Counter[str] = Counter()
        part = data.split(split)
        for i, (text, raw) in enumerate(zip(part.texts, part.intents, strict=True)):
            entry = responses.by_raw.get(raw)
            if entry is None or (intents is not None and raw not in intents):
                continue
            cap = (max_per_intent or {}).get(split)
            if cap is not None and seen[raw] >= cap:
                continue
            seen[raw] += 1
            # Per-example generator: independent of iteration order elsewhere.
            rng = random.Random(f"{seed}:{split}:{i}:{text}")
            now = BASE_CLOCK + timedelta(minutes=rng.randrange(365 * 24 * 60))
            slots = {k: s.value for k, s in extractor.extract(text, entry.slots, now).items()}
            facts = fulfil(raw, slots, now=now, rng=rng)
            refs = entry.valid_replies(set(slots) | set(facts))
            examples.append(ResponseExample(split, label_map.core_of(raw), raw, text, slots,
                                            facts, rng.choice(refs), refs))
        out[split] = examples
    return out


def checksum(examples: dict[str, list[ResponseExample]]) -> str:
    h = hashlib.sha256()
    for split in sorted(examples):
        for ex in examples[split]:
            h.update(json.dumps(asdict(ex), sort_keys=True).encode("utf-8"))
    return h.hexdigest()[:16]


def summary(examples: list[ResponseExample]) -> dict:
    with_slots = sum(bool(e.slots) for e in examples)
    with_facts = sum(bool(e.facts) for e in examples)
    return {"examples": len(examples), "with_slots": with_slots, "with_facts": with_facts,
            "core_intents": dict(sorted(Counter(e.core_intent for e in examples).items()))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="CLINC150 directory (else the hub)")
    parser.add_argument("--variant", default="plus")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", required=True, help="JSON lines file to write")
    args = parser.parse_args(argv)
    data = load_clinc(args.data_dir, variant=args.variant)
    examples = build_examples(data, seed=args.seed)
    with open(args.out, "w", encoding="utf-8") as f:
        for split in examples:
            for ex in examples[split]:
                f.write(json.dumps(asdict(ex), ensure_ascii=False) + "\n")
    report = {s: summary(v) for s, v in examples.items()}
    print(json.dumps({"checksum": checksum(examples), **report}, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
