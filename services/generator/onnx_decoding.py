"""Greedy decoding with ONNX Runtime: the encoder once per batch, then one decoder step per
token, each step reading the keys and values the earlier ones cached.

Replaces `generate` for the artifacts that carry the two graphs (training.generator_export):
the same tokens (greedy, the same no-repeat-n-gram rule, the same stop and padding), without
the per-step Python of a generic `generate` and eager PyTorch. Beam search stays with torch.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def session(path: Path, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # its warnings are about graph rewrites, nothing to act on
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class NoRepeatNGrams:
    """Bans each token that would repeat an n-gram the row already holds: what
    `no_repeat_ngram_size` does in `generate`, kept incrementally instead of rescanned."""

    def __init__(self, size: int):
        self.size = size
        self.seen: dict[tuple[int, ...], set[int]] = {}

    def banned(self, tokens: list[int]) -> AbstractSet[int]:
        """The tokens that may not follow `tokens` (a read-only view: called every step)."""
        n = self.size
        if n <= 0 or len(tokens) + 1 < n:
            return frozenset()
        return self.seen.get(tuple(tokens[len(tokens) - n + 1 :]), frozenset())

    def add(self, tokens: list[int]) -> None:
        """Record the n-gram that `tokens`' last token completes."""
        n = self.size
        if n > 0 and len(tokens) >= n:
            self.seen.setdefault(tuple(tokens[-n:-1]), set()).add(tokens[-1])


@dataclass
class Row:
    """One request in a running batch: its tokens so far (the start token first), its
    budget, its n-gram bans, and the caller's handle for it."""

    key: Any
    budget: int
    tokens: list[int]
    ngrams: NoRepeatNGrams
    done: bool = False

    @property
    def generated(self) -> int:
        return len(self.tokens) - 1


class OnnxGreedyDecoder:
    """The two graphs and the decoding rule (start, end and pad ids, n-gram bans)."""

    def __init__(
        self,
        encoder: Path,
        decoder_step: Path,
        *,
        start_id: int,
        end_id: int,
        pad_id: int,
        no_repeat_ngram_size: int,
        threads: int | None = None,
    ):
        self.encoder = session(encoder, threads)
        self.step = session(decoder_step, threads)
        self.start_id, self.end_id, self.pad_id = start_id, end_id, pad_id
        self.no_repeat_ngram_size = no_repeat_ngram_size
        inputs = self.step.get_inputs()
        if "self_attention_mask" not in {i.name for i in inputs}:
            raise ValueError(
                f"{decoder_step}: exported without self_attention_mask (an older export); "
                "run python -m training.generator_export on the artifact again"
            )
        self.cross_names = [i.name for i in inputs if i.name.startswith("cross_")]
        past = [i for i in inputs if i.name.startswith("past_")]
        self.past_names = [i.name for i in past]
        self.heads, self.head_size = int(past[0].shape[1]), int(past[0].shape[3])

    def batch(self) -> DecodingBatch:
        return DecodingBatch(self)

    def generate(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int
    ) -> list[list[int]]:
        """Each row's tokens, the start token first, padded after its end token (as
        `generate` returns them), in the decoder's own (compact) ids."""
        if not len(input_ids):
            return []
        batch = self.batch()
        batch.admit(
            list(range(len(input_ids))),
            input_ids,
            attention_mask,
            [max_new_tokens] * len(input_ids),
        )
        rows: dict[int, list[int]] = {}
        while len(batch):
            rows.update((row.key, row.tokens) for row in batch.step())
        longest = max(len(r) for r in rows.values())
        return [rows[i] + [self.pad_id] * (longest - len(rows[i])) for i in range(len(rows))]


class DecodingBatch:
    """A batch that requests join and leave between decoding steps (iteration-level, or
    continuous, batching as in text-generation-inference): a request joins with its
    encoder's keys and values, writes one token per step, and leaves when its reply ends or
    its budget is spent, so a short reply never waits for a long one and a free slot is
    taken at the next step.

    Row k of every state array belongs to `rows[k]`. The self-attention cache is as long as
    the oldest row's; a row that joined later is padded on the left, masked out. The cross
    keys and values are padded to the longest source, masked out by the source mask.

    Joining and leaving copy every state array, so an ended row stays in the arrays, no
    longer written, until a quarter of the rows have ended or new rows join: the copies are
    paid a few times per reply length, not at every step (measured: leaving at once cost
    more than it saved, docs/results.md)."""

    def __init__(self, decoder: OnnxGreedyDecoder):
        self.decoder = decoder
        self.rows: list[Row] = []  # the ended ones too, until the next compaction
        self.state: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        """Rows still writing."""
        return sum(not r.done for r in self.rows)

    @property
    def width(self) -> int:
        """Rows in the arrays, ended ones included: what a step computes."""
        return len(self.rows)

    def drop(self, keys: set) -> None:
        """Stop writing these rows (their callers went away)."""
        for row in self.rows:
            if row.key in keys:
                row.done = True
        self._compact_when_due()

    def _compact_when_due(self) -> None:
        if 4 * (self.width - len(self)) >= self.width:
            self.compact()

    def compact(self) -> None:
        """Take the ended rows out of the arrays."""
        self.remove([k for k, r in enumerate(self.rows) if r.done])

    def admit(
        self, keys: list, input_ids: np.ndarray, attention_mask: np.ndarray, budgets: list[int]
    ) -> None:
        """Join these requests (their tokenised sources, padded to one length) to the batch."""
        d = self.decoder
        self.compact()
        input_ids = np.asarray(input_ids, dtype=np.int64)
        attention_mask = np.asarray(attention_mask, dtype=np.int64)
        n = len(input_ids)
        cross = d.encoder.run(
            d.cross_names, {"input_ids": input_ids, "attention_mask": attention_mask}
        )
        steps = self.state["self_attention_mask"].shape[1] if self.rows else 0
        new = {
            "encoder_attention_mask": attention_mask,
            **dict(zip(d.cross_names, cross, strict=True)),
            **{
                name: np.zeros((n, d.heads, steps, d.head_size), dtype=np.float32)
                for name in d.past_names
            },
            "self_attention_mask": np.zeros((n, steps), dtype=np.int64),
        }
        if self.rows:
            self.state = {k: _concat_rows(self.state[k], new[k], k) for k in self.state}
        else:
            self.state = new
        for key, budget in zip(keys, budgets, strict=True):
            ngrams = NoRepeatNGrams(d.no_repeat_ngram_size)
            self.rows.append(Row(key, budget, [d.start_id], ngrams))

    def step(self) -> list[Row]:
        """One token for every row still writing; returns the rows that ended."""
        d = self.decoder
        own = np.concatenate(
            [self.state["self_attention_mask"], np.ones((len(self.rows), 1), dtype=np.int64)],
            axis=1,
        )
        feeds = {
            **self.state,
            "self_attention_mask": own,
            "input_ids": np.array([[r.tokens[-1]] for r in self.rows], dtype=np.int64),
            # an ended row, still in the arrays, reads position 0: its own may be past the
            # position table once its budget is spent
            "position_ids": np.array(
                [[0 if r.done else r.generated] for r in self.rows], dtype=np.int64
            ),
        }
        logits, *present = d.step.run(None, feeds)
        self.state.update(zip(d.past_names, present, strict=True))
        self.state["self_attention_mask"] = own
        ended = []
        for k, row in enumerate(self.rows):
            if row.done:
                continue
            scores = logits[k]
            banned = row.ngrams.banned(row.tokens)
            if banned:
                scores = scores.copy()
                scores[list(banned)] = -np.inf
            token = int(scores.argmax())
            row.tokens.append(token)
            row.ngrams.add(row.tokens)
            if token == d.end_id or row.generated >= row.budget:
                row.done = True
                ended.append(row)
        if ended:
            self._compact_when_due()
        return ended

    def remove(self, indices: list[int]) -> None:
        """Take these rows out (ended, or abandoned by their callers)."""
        if not indices:
            return
        gone = set(indices)
        keep = [k for k in range(len(self.rows)) if k not in gone]
        self.rows = [self.rows[k] for k in keep]
        if not self.rows:
            self.state = {}
            return
        index = np.array(keep)
        state = {name: value[index] for name, value in self.state.items()}
        # Drop the cache columns that are padding for every row left, and the source
        # columns no row left reads.
        own = state["self_attention_mask"]
        first = int(own.any(axis=0).argmax()) if own.shape[1] else 0
        source = state["encoder_attention_mask"]
        width = int(source.any(axis=0).nonzero()[0].max()) + 1
        for name in self.state:
            if name.startswith("past_"):
                state[name] = state[name][:, :, first:]
            elif name.startswith("cross_"):
                state[name] = state[name][:, :, :width]
        state["self_attention_mask"] = own[:, first:]
        state["encoder_attention_mask"] = source[:, :width]
        self.state = state


def _concat_rows(old: np.ndarray, new: np.ndarray, name: str) -> np.ndarray:
    """Rows of `new` under those of `old`: padded to the wider source (on the right, as the
    tokenizer pads) or, for the self-attention cache, to the longer one (on the left)."""
    axis = 1 if name.endswith("_mask") else 2
    width = max(old.shape[axis], new.shape[axis])
    left = name.startswith("past_") or name == "self_attention_mask"

    def pad(a: np.ndarray) -> np.ndarray:
        extra = width - a.shape[axis]
        if not extra:
            return a
        spec = [(0, 0)] * a.ndim
        spec[axis] = (extra, 0) if left else (0, extra)
        return np.pad(a, spec)

    return np.concatenate([pad(old), pad(new)], axis=0)
