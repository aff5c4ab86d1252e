"""Builds the generator's examples from a pack's utterances (CLINC150's by default).

For every utterance of a raw intent that maps to a generated core intent (train, val and
test kept apart, exactly as CLINC150 splits them):

    slots   = the pack's slot extractor on the text, for the raw intent's slots; a required
              slot the text lacks gets a value the same intent's other utterances of the
              split gave (seeded choice): the gateway asks for it first (a one-slot form),
              so the generator sees the opener with the value the user answered
    facts   = the raw intent's action (time, a calculation, a coin flip, ...)
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
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from parlance.actions import run_action
from parlance.pack import Pack, load_pack
from training.data import ClincData, load_pack_data

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


def build_examples(
    data: ClincData,
    pack: Pack | None = None,
    seed: int = 42,
    splits: tuple[str, ...] = ("train", "val", "test"),
    max_per_intent: dict[str, int] | None = None,
    intents: set[str] | None = None,
) -> dict[str, list[ResponseExample]]:
    """`max_per_intent[split]` caps utterances per raw intent (first N, in file order);
    `intents` restricts to some raw intents (tests train on a subset)."""
    pack = pack or load_pack()
    responses, label_map = pack.responses, pack.label_map
    generated = set(pack.generated_intents)
    out: dict[str, list[ResponseExample]] = {}
    for split in splits:
        examples: list[ResponseExample] = []
        seen: Counter[str] = Counter()
        part = data.split(split)
        answers = _required_values(pack, part, generated)
        for i, (text, raw) in enumerate(zip(part.texts, part.intents, strict=True)):
            entry = responses.by_raw.get(raw)
            if (
                entry is None
                or raw not in generated
                or (intents is not None and raw not in intents)
            ):
                continue
            cap = (max_per_intent or {}).get(split)
            if cap is not None and seen[raw] >= cap:
                continue
            seen[raw] += 1
            # Per-example generator: independent of iteration order elsewhere.
            rng = random.Random(f"{seed}:{split}:{i}:{text}")
            now = BASE_CLOCK + timedelta(minutes=rng.randrange(365 * 24 * 60))
            slots = pack.extract_slots(text, entry.slots, now)
            missing = [r.slot for r in pack.intents[raw].requires if r.slot not in slots]
            if any(not answers[raw, name] for name in missing):
                continue  # nothing to answer the form's question with
            for name in missing:
                slots[name] = rng.choice(answers[raw, name])
            facts = run_action(
                pack.intents[raw].action,
                slots,
                pack.slot_types,
                now=now,
                rng=rng,
                default_tz=pack.assistant.default_timezone,
            )
            refs = entry.valid_replies(set(slots) | set(facts))
            examples.append(
                ResponseExample(
                    split, label_map.core_of(raw), raw, text, slots, facts, rng.choice(refs), refs
                )
            )
        out[split] = examples
    return out


def _required_values(pack: Pack, part, generated: set[str]) -> dict[tuple[str, str], list]:
    """(raw intent, required slot) -> the values the split's utterances of that intent give,
    in file order (the clock does not matter for the required types' values)."""
    values: dict[tuple[str, str], list[str]] = defaultdict(list)
    for text, raw in zip(part.texts, part.intents, strict=True):
        intent = pack.intents.get(raw)
        if raw not in generated or intent is None or not intent.requires:
            continue
        found = pack.extract_slots(text, [r.slot for r in intent.requires], BASE_CLOCK)
        for name, value in found.items():
            values[raw, name].append(value)
    return values


def checksum(examples: dict[str, list[ResponseExample]]) -> str:
    h = hashlib.sha256()
    for split in sorted(examples):
        for ex in examples[split]:
            h.update(json.dumps(asdict(ex), sort_keys=True).encode("utf-8"))
    return h.hexdigest()[:16]


def summary(examples: list[ResponseExample]) -> dict:
    with_slots = sum(bool(e.slots) for e in examples)
    with_facts = sum(bool(e.facts) for e in examples)
    return {
        "examples": len(examples),
        "with_slots": with_slots,
        "with_facts": with_facts,
        "core_intents": dict(sorted(Counter(e.core_intent for e in examples).items())),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", default="clinc150", help="pack directory or bundled name")
    parser.add_argument("--data-dir", default=None, help="CLINC150 directory (else the hub)")
    parser.add_argument("--variant", default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", required=True, help="JSON lines file to write")
    args = parser.parse_args(argv)
    pack = load_pack(args.pack)
    data = load_pack_data(pack, args.data_dir, args.variant, seed=args.seed, background=False)
    examples = build_examples(data, pack, seed=args.seed)
    with open(args.out, "w", encoding="utf-8") as f:
        for split in examples:
            for ex in examples[split]:
                f.write(json.dumps(asdict(ex), ensure_ascii=False) + "\n")
    report = {s: summary(v) for s, v in examples.items()}
    print(json.dumps({"checksum": checksum(examples), **report}, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
