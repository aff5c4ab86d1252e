"""Inference backends: the same artifact through ONNX Runtime (CPU default) or torch (CUDA).

Both take a list of texts and return `(logits, features)` as float32 numpy arrays, so the
decision rule in `scoring.py` is shared. Tokenisation is done once per batch with the
artifact's own (fast) tokenizer and dynamic padding to the longest text in the batch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from services.classifier.artifact import ArtifactError, ClassifierArtifact


class Backend(Protocol):
    name: str

    def forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]: ...


def _tokenizer(artifact: ClassifierArtifact):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(artifact.model_dir))


class FastTokenizer:
    """The artifact's `tokenizer.json` through the `tokenizers` library alone: the same
    normalisation, special tokens, truncation (max_length including them) and right padding
    as transformers' fast tokenizer, which wraps this very object. Used by the ONNX backend
    so that serving imports neither transformers nor, through it, torch: a faster start, a
    smaller process (the service's peak memory in docs/benchmarks.md), and a Lambda image
    without both (tests compare the ids on CLINC150)."""

    def __init__(self, model_dir, max_length: int):
        import json
        from pathlib import Path

        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        config = json.loads((model_dir / "tokenizer_config.json").read_text())
        pad = config.get("pad_token") or "[PAD]"
        pad = pad["content"] if isinstance(pad, dict) else pad
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(
            max_length, direction=config.get("truncation_side", "right")
        )
        self.tokenizer.enable_padding(
            pad_id=self.tokenizer.token_to_id(pad),
            pad_token=pad,
            direction=config.get("padding_side", "right"),
        )

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        enc = self.tokenizer.encode_batch(texts)
        return {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }


def _onnx_tokenizer(artifact: ClassifierArtifact):
    if (artifact.model_dir / "tokenizer.json").is_file():
        return FastTokenizer(artifact.model_dir, artifact.max_seq_length)
    slow = _tokenizer(artifact)  # an artifact without a fast tokenizer file
    return lambda texts: dict(
        slow(
            texts,
            padding=True,
            truncation=True,
            max_length=artifact.max_seq_length,
            return_tensors="np",
        )
    )


class OnnxBackend:
    def __init__(
        self,
        artifact: ClassifierArtifact,
        quantized: bool = False,
        threads: int | None = None,
        spinning: bool = True,
    ):
        import onnxruntime as ort

        path = artifact.onnx_path(quantized)
        if not path.is_file():
            raise ArtifactError(f"{path} not found (artifact has no ONNX export)")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        # Spinning worker threads cut batch-1 latency but burn CPU between runs, which a
        # server's event loop on a small machine may need (CLASSIFIER_ORT_SPINNING).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer = _onnx_tokenizer(artifact)
        self.name = "onnx-int8" if quantized else "onnx-fp32"

    def forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.tokenizer(texts)
        feeds = {k: v.astype(np.int64) for k, v in enc.items() if k in self.input_names}
        logits, features = self.session.run(["logits", "features"], feeds)
        return logits, features


class TorchBackend:
    def __init__(
        self, artifact: ClassifierArtifact, device: str | None = None, threads: int | None = None
    ):
        import torch

        from services.classifier.modeling import IntentClassifier

        if threads:
            torch.set_num_threads(threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = IntentClassifier.from_pretrained(artifact.model_dir).to(device)
        self._init(model, _tokenizer(artifact), artifact.max_seq_length)

    @classmethod
    def from_model(cls, model, tokenizer, max_length: int) -> TorchBackend:
        """An in-memory model (training uses this before anything is saved)."""
        backend = cls.__new__(cls)
        backend._init(model, tokenizer, max_length)
        return backend

    def _init(self, model, tokenizer, max_length: int) -> None:
        import torch

        self.torch = torch
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.name = f"torch-{self.device.type}"

    def forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with self.torch.inference_mode():
            out = self.model(
                input_ids=enc["input_ids"].to(self.device),
                attention_mask=enc["attention_mask"].to(self.device),
            )
        return (out.logits.float().cpu().numpy(), out.features.float().cpu().numpy())


def load_backend(artifact: ClassifierArtifact, kind: str = "onnx", **kwargs) -> Backend:
    """`kind`: "onnx" (fp32), "onnx-int8", or "torch"."""
    if kind == "onnx":
        return OnnxBackend(artifact, quantized=False, **kwargs)
    if kind == "onnx-int8":
        return OnnxBackend(artifact, quantized=True, **kwargs)
    if kind == "torch":
        return TorchBackend(artifact, **kwargs)
    raise ValueError(f"unknown backend {kind!r}; choose onnx, onnx-int8 or torch")


def forward_batched(
    backend: Backend, texts: list[str], batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Run many texts in length-sorted batches (less padding), results in input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    logits, feats = [None] * len(texts), [None] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        lg, ft = backend.forward([texts[i] for i in idx])
        for j, i in enumerate(idx):
            logits[i], feats[i] = lg[j], ft[j]
    return np.stack(logits), np.stack(feats)
