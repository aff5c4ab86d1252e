"""The bundled background set of out-of-domain sentences (`parlance/resources/
background_oos.txt`, written for this project): out-of-scope training and calibration data
for packs that have none of their own.

A background sentence can be in scope for some pack ("what's the weather" is out of scope for
a bike shop, not for CLINC150). Sentences whose embedding (the untrained offline encoder,
mean-pooled, cosine) is close to any of the pack's own examples are dropped before use, so
the background never teaches the classifier to reject what the pack answers."""

from __future__ import annotations

import logging
import random
from functools import cache
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

PATH = Path(__file__).resolve().parents[1] / "parlance" / "resources" / "background_oos.txt"
# Cosine similarity in the base encoder's space above which a background sentence counts as
# something the pack itself answers.
MAX_SIMILARITY = 0.7
VAL_SHARE = 0.3


@cache
def sentences() -> tuple[str, ...]:
    lines = PATH.read_text(encoding="utf-8").splitlines()
    return tuple(x.strip() for x in lines if x.strip() and not x.startswith("# "))


def embed(texts: list[str], batch_size: int = 256) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings of the offline encoder."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from training.classifier import OFFLINE_MINILM, resolve_model_path

    path = resolve_model_path(OFFLINE_MINILM)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[i : i + batch_size],
                padding=True,
                truncation=True,
                max_length=32,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 384), np.float32)


def background_split(
    pack_texts: list[str], seed: int = 42, max_similarity: float = MAX_SIMILARITY
) -> tuple[list[str], list[str]]:
    """(train, val) background sentences, without those close to the pack's examples."""
    pool = list(sentences())
    if pack_texts:
        bg, own = embed(pool), embed(pack_texts)
        nearest = (bg @ own.T).max(axis=1)
        kept = [t for t, s in zip(pool, nearest, strict=True) if s < max_similarity]
        logger.info(
            "background out-of-scope set: %d of %d sentences kept (%d too close to the "
            "pack's examples)",
            len(kept),
            len(pool),
            len(pool) - len(kept),
        )
        pool = kept
    random.Random(seed).shuffle(pool)
    n_val = round(len(pool) * VAL_SHARE)
    return pool[n_val:], pool[:n_val]
