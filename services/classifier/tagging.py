"""Slot tags <-> character spans, shared by training (labels from annotated spans) and serving
(entities from the tagger's logits).

Words are the tokenizer's pre-tokenised words (`word_ids`: whitespace and punctuation
split), each tagged by its first sub-word token. Offsets are character offsets into the text
as sent (the fast tokenizer maps its normalisation back: lower-casing, accents, several
spaces), end exclusive, so `text[start:end]` is the span said.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IGNORE = -100  # tag label of special tokens and of a word's later sub-words


def bio_tags(slots: list[str]) -> list[str]:
    """The tagger's label list: "O", then B-/I- for each slot."""
    return ["O"] + [f"{p}-{s}" for s in slots for p in ("B", "I")]


@dataclass(frozen=True)
class Word:
    token: int  # index of its first sub-word token
    start: int  # character span in the text
    end: int


def words_of(word_ids: Sequence[int | None], offsets: Sequence[tuple[int, int]]) -> list[Word]:
    """The words of one encoded text: first token and character span of each."""
    words: list[Word] = []
    last = None
    for t, w in enumerate(word_ids):
        if w is None:
            continue
        s, e = offsets[t]
        if w != last:
            words.append(Word(t, int(s), int(e)))
            last = w
        else:
            words[-1] = Word(words[-1].token, words[-1].start, int(e))
    return words


def token_labels(
    words: list[Word], n_tokens: int, spans: Sequence, tag2id: dict[str, int]
) -> list[int]:
    """Training labels: B-/I-<slot> on the first token of each word inside an annotated span
    (a word overlapping a span belongs to it), O on other words, IGNORE elsewhere."""
    labels = [IGNORE] * n_tokens
    for word in words:
        labels[word.token] = tag2id["O"]
    for span in spans:
        inside = [w for w in words if w.start < span.end and w.end > span.start]
        for n, word in enumerate(inside):
            tag = f"{'B' if n == 0 else 'I'}-{span.slot}"
            if tag in tag2id:
                labels[word.token] = tag2id[tag]
    return labels


@dataclass(frozen=True)
class TaggedSpan:
    slot: str
    start: int
    end: int
    confidence: float


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def decode(tag_logits: np.ndarray, words: list[Word], tags: list[str]) -> list[TaggedSpan]:
    """Spans from one text's tag logits (tokens x tags). BIO is repaired the conlleval way:
    an I- that does not continue a span of its slot starts one. Confidence: the mean
    probability of the words' predicted tags."""
    if not words:
        return []
    probs = _softmax(tag_logits[[w.token for w in words]].astype(np.float64))
    best = probs.argmax(-1)
    spans: list[TaggedSpan] = []
    current: tuple[str, int, int, list[float]] | None = None

    def close():
        if current is not None:
            slot, s, e, ps = current
            spans.append(TaggedSpan(slot, s, e, float(np.mean(ps))))

    for n, (word, k) in enumerate(zip(words, best, strict=True)):
        prefix, _, slot = tags[int(k)].partition("-")
        if prefix == "O":
            close()
            current = None
            continue
        prob = float(probs[n, int(k)])
        if prefix == "I" and current is not None and current[0] == slot:
            current = (slot, current[1], word.end, current[3] + [prob])
        else:
            close()
            current = (slot, word.start, word.end, [prob])
    close()
    return spans


_INSIDE_WORD = "-'’&"


def snap_to_words(text: str, spans: list[TaggedSpan]) -> list[TaggedSpan]:
    """Spans widened to whole words of the text as written: the tokenizer splits "e-bike"
    and "o'clock" into several words, and a tagger that tags "e" and "-" meant "e-bike".
    A span grows over letters, digits and in-word marks, never into a neighbour span."""
    out: list[TaggedSpan] = []
    for n, span in enumerate(spans):
        lo = out[-1].end if out else 0
        hi = spans[n + 1].start if n + 1 < len(spans) else len(text)
        start, end = span.start, span.end
        while start > lo and (text[start - 1].isalnum() or text[start - 1] in _INSIDE_WORD):
            start -= 1
        while end < hi and (text[end].isalnum() or text[end] in _INSIDE_WORD):
            end += 1
        # an in-word mark at an edge belongs to no word ("rock-" of "rock- and roll")
        while end > start and text[end - 1] in _INSIDE_WORD:
            end -= 1
        while start < end and text[start] in _INSIDE_WORD:
            start += 1
        out.append(TaggedSpan(span.slot, start, end, span.confidence))
    return out
