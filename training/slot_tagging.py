"""The slot tagger's side of training and evaluation: labels from annotated spans, a collator
that pads them, silver annotations from the rule extractor, and slot metrics.

Metrics are CoNLL-style (`seqeval`, exact span and type) over the text's whitespace words:
a word belongs to a span it overlaps, so gold (annotated) and predicted (character) spans
are compared on the same words. Sentence accuracy counts a text right when its intent and
every one of its spans are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from parlance.pack.markup import Span
from services.classifier.tagging import IGNORE, token_labels, words_of
from training.data import OOS, ClincData, Split


def slots_of(data: ClincData) -> list[str]:
    """The slots annotated in the training split, sorted (the tagger's slots)."""
    if data.train.spans is None:
        return []
    return sorted({s.slot for spans in data.train.spans for s in spans})


def tokenize_tagged(split: Split, labels: list[int], tokenizer, max_length: int, tags: list[str]):
    """A `datasets.Dataset` of model inputs with intent `labels` and per-token `tag_labels`."""
    import datasets

    if getattr(tokenizer, "padding_side", "right") != "right":
        raise ValueError("the slot tagger's collator pads on the right; the tokenizer pads left")
    tag2id = {t: i for i, t in enumerate(tags)}
    enc = tokenizer(
        split.texts, truncation=True, max_length=max_length, return_offsets_mapping=True
    )
    tag_labels = []
    for i in range(len(split)):
        words = words_of(enc.word_ids(i), enc["offset_mapping"][i])
        tag_labels.append(token_labels(words, len(enc["input_ids"][i]), split.spans_of(i), tag2id))
    columns = {k: v for k, v in enc.items() if k != "offset_mapping"}
    return datasets.Dataset.from_dict({**columns, "labels": labels, "tag_labels": tag_labels})


@dataclass
class TagCollator:
    """Dynamic padding of the inputs, and of `tag_labels` with IGNORE to the same length."""

    tokenizer: object

    def __call__(self, features: list[dict]) -> dict:
        import torch
        from transformers import DataCollatorWithPadding

        tags = [f.pop("tag_labels") for f in features]
        batch = DataCollatorWithPadding(self.tokenizer)(features)
        width = batch["input_ids"].shape[1]
        batch["tag_labels"] = torch.tensor(
            [t[:width] + [IGNORE] * (width - len(t)) for t in tags], dtype=torch.long
        )
        return batch


def tag_metrics(tag_logits: np.ndarray, tag_labels: np.ndarray, tags: list[str]) -> dict:
    """Val slot F1 each epoch, on the tagged tokens (first sub-words): a cheap stand-in for
    the word-level figure the evaluation reports."""
    from seqeval.metrics import f1_score

    pred = tag_logits.argmax(-1)
    gold_seqs, pred_seqs = [], []
    for g_row, p_row in zip(tag_labels, pred, strict=True):
        keep = g_row != IGNORE
        gold_seqs.append([tags[int(x)] for x in g_row[keep]])
        pred_seqs.append([tags[int(x)] for x in p_row[keep]])
    return {"slot_f1": float(f1_score(gold_seqs, pred_seqs, zero_division=0))}


# ---------------------------------------------------------------- silver annotations


def silver_annotate(data: ClincData, pack) -> ClincData:
    """Spans the rule extractor finds for each intent's slots (those it declares and those
    it requires), as if annotated: a pack whose examples carry no markup (CLINC150) gains a
    learned extractor that generalises beyond the rules' lists."""
    wanted = {
        name: list(dict.fromkeys([*i.slots, *(r.slot for r in i.requires)]))
        for name, i in pack.intents.items()
    }

    def annotate(split: Split) -> Split:
        spans = []
        for text, intent in zip(split.texts, split.intents, strict=True):
            spans.append(rule_spans(pack, text, wanted.get(intent, [])) if intent != OOS else ())
        return Split(split.texts, split.intents, spans)

    return data.with_splits(
        train=annotate(data.train),
        val=annotate(data.val),
        test=annotate(data.test),
        source=data.source + "+silver-slots",
    )


def rule_spans(pack, text: str, slots: Sequence[str], now=None) -> tuple[Span, ...]:
    """The rule extractor's spans for `slots` in `text`: each slot takes the first match of
    its type not taken by an earlier slot (as `Pack.extract_slots`)."""
    names = [n for n in slots if n in pack.slot_types]
    if not names:
        return ()
    found = pack.extractor.extract_all(text, {pack.slot_types[n] for n in names}, now)
    used: set[int] = set()
    out = []
    for name in names:
        for i, slot in enumerate(found):
            if i not in used and slot.kind == pack.slot_types[name]:
                used.add(i)
                out.append(
                    Span(name, text[slot.start : slot.end], slot.value, slot.start, slot.end)
                )
                break
    return tuple(sorted(out, key=lambda s: s.start))


# ---------------------------------------------------------------- evaluation


def word_tags(text: str, spans: Sequence) -> list[str]:
    """BIO tags of the text's whitespace words under `spans` (objects with slot/start/end)."""
    words, pos = [], 0
    for w in text.split():
        start = text.index(w, pos)
        words.append((start, start + len(w)))
        pos = start + len(w)
    tags = ["O"] * len(words)
    for span in sorted(spans, key=lambda s: s.start):
        inside = [n for n, (s, e) in enumerate(words) if s < span.end and e > span.start]
        for k, n in enumerate(inside):
            if tags[n] == "O":
                tags[n] = f"{'B' if k == 0 else 'I'}-{span.slot}"
    return tags


def slot_report(
    texts: Sequence[str],
    gold: Sequence[Sequence],
    predicted: Sequence[Sequence],
    intent_right: Sequence[bool],
) -> dict:
    """Slot precision / recall / F1 (CoNLL), per slot, and sentence accuracy."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    g = [word_tags(t, s) for t, s in zip(texts, gold, strict=True)]
    p = [word_tags(t, s) for t, s in zip(texts, predicted, strict=True)]
    per = classification_report(g, p, output_dict=True, zero_division=0)
    sentence = [ok and a == b for ok, a, b in zip(intent_right, g, p, strict=True)]
    return {
        "slot_f1": float(f1_score(g, p, zero_division=0)),
        "slot_precision": float(precision_score(g, p, zero_division=0)),
        "slot_recall": float(recall_score(g, p, zero_division=0)),
        "sentence_accuracy": float(np.mean(sentence)) if sentence else 0.0,
        "n_spans": int(sum(len(s) for s in gold)),
        "per_slot": {
            k: {
                "f1": float(v["f1-score"]),
                "precision": float(v["precision"]),
                "recall": float(v["recall"]),
                "support": int(v["support"]),
            }
            for k, v in per.items()
            if not k.endswith("avg")
        },
    }


# ---------------------------------------------------------------- made-up values

_SYLLABLES = (
    ["ka", "lo", "mi", "ren", "to", "sa", "vi", "na", "dor", "bel", "un", "ta"]
    + ["ri", "go", "zu", "pe", "lan", "mar", "os", "ek", "bra", "quel", "tor", "nim"]
    + ["fa", "hu", "jo", "sel", "va", "der", "ix", "om", "pra", "lu", "wen"]
)


def made_up_name(rng) -> str:
    """A pronounceable word or two that is no real value ("kalomi", "vider sabel")."""
    words = [
        "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 2, 3))))
        for _ in range(rng.choice((1, 1, 1, 2)))
    ]
    return " ".join(words)


def substitute_values(split: Split, slots: set[str], seed: int) -> Split:
    """Augmentation: each example with a span of one of `slots` once more, every such span
    replaced by a made-up name in the same casing. A tagger trained on lists (silver
    annotations, or markup whose values repeat) otherwise learns the list, not the context
    a value is said in."""
    import random

    rng = random.Random(f"substitute:{seed}")
    texts, intents, spans = [], [], []
    for n, text in enumerate(split.texts):
        mine = split.spans_of(n)
        if not any(s.slot in slots for s in mine):
            continue
        out, new_spans, pos, shift = [], [], 0, 0
        for s in sorted(mine, key=lambda s: s.start):
            out.append(text[pos : s.start])
            value = s.text
            if s.slot in slots:
                value = made_up_name(rng)
                value = value.title() if s.text[:1].isupper() else value
            start = s.start + shift
            new_spans.append(Span(s.slot, value, value, start, start + len(value)))
            shift += len(value) - len(s.text)
            out.append(value)
            pos = s.end
        out.append(text[pos:])
        texts.append("".join(out))
        intents.append(split.intents[n])
        spans.append(tuple(new_spans))
    return Split(split.texts + texts, split.intents + intents, (split.spans or []) + spans)


# ---------------------------------------------------------------- tagger or rules, per slot


def _lists_without(pack, train: Split, val: Split):
    """The pack with its list types stripped of the values only validation examples say:
    lists imported from the examples (SNIPS) would otherwise know every validation value,
    and the rules would look better on val than on anything new."""
    from types import SimpleNamespace

    from parlance.pack.loader import extractor_of
    from parlance.pack.models import ListType, SlotsFile

    def said(split: Split) -> set[tuple[str, str]]:
        return {
            (pack.slot_types.get(s.slot, ""), x.lower())
            for n in range(len(split))
            for s in split.spans_of(n)
            for x in (s.text, s.value)
        }

    only_val = said(val) - said(train)
    types = {}
    for name, spec in pack.slots_file.types.items():
        if isinstance(spec, ListType):
            values = {v: syn for v, syn in spec.values.items() if (name, v.lower()) not in only_val}
            spec = spec.model_copy(update={"values": values})
        types[name] = spec
    extractor = extractor_of(SlotsFile(types=types, slots=pack.slots_file.slots))
    return SimpleNamespace(
        slot_types=pack.slot_types,
        extractor=extractor,
        intents=pack.intents,
        forms_file=pack.forms_file,
    )


def slots_left_to_tagger(
    pack, split: Split, predicted: Sequence[Sequence], slots, train: Split | None = None
) -> dict:
    """For each tagged slot of a list or free-text type, its validation F1 two ways: the
    tagger leading (the rules only repair its spans), and the rules leading (the tagger
    adds a value only where the rules found none of that type). A slot is left to the
    tagger when that is better by at least a point of F1 over at least 20 validation spans:
    on little evidence the rules, which a pack's author wrote, keep the lead. Rule types
    always keep their rules. With `train`, the lists lose the values only validation
    examples say (`_lists_without`). Returns {"left_to_tagger": [...], "val_f1": {slot: {...}}}."""
    open_slots = [s for s in slots if not pack.extractor.rule_based(pack.slot_types.get(s, ""))]
    if train is not None:
        pack = _lists_without(pack, train, split)
    rules_lead = []
    for n, text in enumerate(split.texts):
        found = list(rule_spans(pack, text, slots_read_for(pack, split.intents[n])))
        have = {r.slot for r in found}
        found += [
            m
            for m in predicted[n]
            if m.slot not in have and not any(r.start < m.end and m.start < r.end for r in found)
        ]
        rules_lead.append(found)
    right = [True] * len(split)
    alone = slot_report(split.texts, split.spans, predicted, right)["per_slot"]
    lead = slot_report(split.texts, split.spans, rules_lead, right)["per_slot"]
    scores = {
        s: {
            "tagger": alone.get(s, {}).get("f1", 0.0),
            "rules_lead": lead.get(s, {}).get("f1", 0.0),
            "support": alone.get(s, {}).get("support", 0),
        }
        for s in open_slots
    }
    left = sorted(
        s for s, f in scores.items() if f["support"] >= 20 and f["tagger"] >= f["rules_lead"] + 0.01
    )
    return {"left_to_tagger": left, "val_f1": scores}


def slots_read_for(pack, intent: str) -> list[str]:
    """The slots the gateway reads in a request of `intent`: those it declares, those it
    requires, and those of the form it opens."""
    spec = pack.intents.get(intent)
    if spec is None:
        return []
    names = [*spec.slots, *(r.slot for r in spec.requires)]
    for form in pack.forms_file.forms.values():
        if intent in form.intents:
            names += [s.slot for s in form.slots]
    return list(dict.fromkeys(names))
