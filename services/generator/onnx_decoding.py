"""Greedy decoding with ONNX Runtime: the encoder once per batch, then one decoder step per
token, each step reading the keys and values the earlier ones cached.

Replaces `generate` for the artifacts that carry the two graphs (training.generator_export):
the same tokens (greedy, the same no-repeat-n-gram rule, the same stop and padding), without
the per-step Python of a generic `generate` and eager PyTorch. Beam search stays with torch.
"""

from __future__ import annotations

from pathlib import Path

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
    """Bans, per row, each token that would repeat an n-gram the row already holds: what
    `no_repeat_ngram_size` does in `generate`, kept incrementally instead of rescanned."""

    def __init__(self, size: int, rows: list[list[int]]):
        self.size = size
        self.seen: list[dict[tuple[int, ...], set[int]]] = [{} for _ in rows]

    def banned(self, row: int, tokens: list[int]) -> set[int]:
        n = self.size
        if n <= 0 or len(tokens) + 1 < n:
            return set()
        return self.seen[row].get(tuple(tokens[len(tokens) - n + 1 :]), set())

    def add(self, row: int, tokens: list[int]) -> None:
        n = self.size
        if n > 0 and len(tokens) >= n:
            self.seen[row].setdefault(tuple(tokens[-n:-1]), set()).add(tokens[-1])


class OnnxGreedyDecoder:
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
        self.cross_names = [i.name for i in self.step.get_inputs() if i.name.startswith("cross_")]
        self.past_names = [i.name for i in self.step.get_inputs() if i.name.startswith("past_")]
        shape = next(i.shape for i in self.step.get_inputs() if i.name.startswith("past_"))
        self.heads, self.head_size = int(shape[1]), int(shape[3])

    def generate(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int
    ) -> list[list[int]]:
        """Each row's tokens, the start token first, padded after its end token (as
        `generate` returns them), in the decoder's own (compact) ids."""
        input_ids = input_ids.astype(np.int64, copy=False)
        attention_mask = attention_mask.astype(np.int64, copy=False)
        batch = input_ids.shape[0]
        cross = self.encoder.run(
            self.cross_names, {"input_ids": input_ids, "attention_mask": attention_mask}
        )
        empty = np.zeros((batch, self.heads, 0, self.head_size), dtype=np.float32)
        # Per-row inputs: row k of each array belongs to rows[live[k]].
        state = {
            "encoder_attention_mask": attention_mask,
            **dict(zip(self.cross_names, cross, strict=True)),
            **{name: empty for name in self.past_names},
        }
        rows = [[self.start_id] for _ in range(batch)]
        ngrams = NoRepeatNGrams(self.no_repeat_ngram_size, rows)
        live = list(range(batch))  # the rows in the batch, row k of each state array
        done = [False] * batch
        for position in range(max_new_tokens):
            feeds = {
                **state,
                "input_ids": np.array([[rows[i][-1]] for i in live], dtype=np.int64),
                "position_ids": np.full((len(live), 1), position, dtype=np.int64),
            }
            logits, *present = self.step.run(None, feeds)
            state.update(zip(self.past_names, present, strict=True))
            still = []
            for k, i in enumerate(live):
                if done[i]:
                    continue  # ended at an earlier step, kept in the batch until compaction
                scores = logits[k]
                banned = ngrams.banned(i, rows[i])
                if banned:
                    scores = scores.copy()
                    scores[list(banned)] = -np.inf
                token = int(scores.argmax())
                rows[i].append(token)
                ngrams.add(i, rows[i])
                done[i] = token == self.end_id
                if not done[i]:
                    still.append(k)
            if not still:
                break
            if (len(live) - len(still)) * 4 >= len(live):
                # Finished rows leave the batch once they are a quarter of it: the later
                # steps compute only the rows still writing (a row's result does not depend
                # on the others'), and the copy this costs is paid a few times per batch,
                # not at every row's end.
                keep = np.array(still)
                state = {name: value[keep] for name, value in state.items()}
                live = [live[k] for k in still]
        # As `generate` returns them: every row as long as the longest, padded after its end.
        longest = max(len(r) for r in rows)
        return [r + [self.pad_id] * (longest - len(r)) for r in rows]
