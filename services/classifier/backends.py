"""Inference backends: the same artifact through ONNX Runtime (CPU default) or torch (CUDA).

Both take a list of texts and return `(logits, features)` as float32 numpy arrays, so the
decision rule in `scoring.py` is shared. Tokenisation is done once per batch with the
artifact's own (fast) tokenizer and dynamic padding to the longest text in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from services.classifier.artifact import ArtifactError, ClassifierArtifact
from services.classifier.tagging import Word, words_of


@dataclass
class BackendOutput:
    logits: np.ndarray  # texts x labels
    features: np.ndarray  # texts x hidden (pooled)
    tag_logits: np.ndarray | None = None  # texts x tokens x tags (a joint model only)
    words: list[list[Word]] | None = None  # per text: first token and span of each word


class Backend(Protocol):
    name: str

    def run(self, texts: list[str]) -> BackendOutput: ...

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
        return self.encode(texts)[0]

    def encode(self, texts: list[str]) -> tuple[dict[str, np.ndarray], list]:
        """Model inputs, and the `tokenizers` encodings (offsets, word ids) behind them."""
        enc = self.tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }
        return feeds, enc

    def words(self, texts: list[str]) -> tuple[dict[str, np.ndarray], list[list[Word]]]:
        feeds, enc = self.encode(texts)
        return feeds, [words_of(e.word_ids, e.offsets) for e in enc]


class _TransformersTokenizer:
    """transformers' tokenizer behind the same `__call__` / `words` as `FastTokenizer`."""

    def __init__(self, tokenizer, max_length: int, tensors: str = "np"):
        self.tokenizer, self.max_length, self.tensors = tokenizer, max_length, tensors

    def _encode(self, texts: list[str], offsets: bool):
        return self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors=self.tensors,
            return_offsets_mapping=offsets,
        )

    def __call__(self, texts: list[str]) -> dict:
        return dict(self._encode(texts, False))

    def words(self, texts: list[str]) -> tuple[dict, list[list[Word]]]:
        enc = self._encode(texts, True)
        offsets = enc.pop("offset_mapping").tolist()
        return dict(enc), [words_of(enc.word_ids(i), offsets[i]) for i in range(len(texts))]


def _onnx_tokenizer(artifact: ClassifierArtifact):
    if (artifact.model_dir / "tokenizer.json").is_file():
        return FastTokenizer(artifact.model_dir, artifact.max_seq_length)
    # an artifact without a fast tokenizer file (no offsets: it cannot serve a slot tagger)
    return _TransformersTokenizer(_tokenizer(artifact), artifact.max_seq_length)


class OnnxBackend:
    def __init__(
        self,
        artifact: ClassifierArtifact,
        quantized: bool = False,
        threads: int | None = None,
        spinning: bool = True,
        spin_between_runs: bool = True,
        path: Path | None = None,
        name: str | None = None,
    ):
        """`path` and `name`: another of the artifact's ONNX models (an int8 alternate)."""
        import onnxruntime as ort

        path = path or artifact.onnx_path(quantized)
        self.path = path
        if not path.is_file():
            raise ArtifactError(f"{path} not found (artifact has no ONNX export)")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        # Worker threads that spin instead of sleeping pick up each parallel section of a
        # run sooner (batch-1 latency) but burn CPU, which a server's event loop on a small
        # machine may need (CLASSIFIER_ORT_SPINNING). Spinning on between runs costs the
        # cores most, but stopping it after each run made single requests slower than the
        # cores it freed made the HTTP side faster, the gateway's turns included
        # (docs/benchmarks.md#gateway): kept on by default.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        if spinning and not spin_between_runs:
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.outputs = ["logits", "features"]
        if "tag_logits" in {o.name for o in self.session.get_outputs()}:
            self.outputs.append("tag_logits")
        self.tokenizer = _onnx_tokenizer(artifact)
        if len(self.outputs) > 2 and not isinstance(self.tokenizer, FastTokenizer):
            raise ArtifactError(
                f"{artifact.model_dir}: a slot tagger needs the fast tokenizer's "
                "tokenizer.json (character offsets); it is missing"
            )
        self.name = name or ("onnx-int8" if quantized else "onnx-fp32")

    def run(self, texts: list[str]) -> BackendOutput:
        words = None
        if len(self.outputs) > 2:
            enc, words = self.tokenizer.words(texts)
        else:
            enc = self.tokenizer(texts)
        feeds = {k: v.astype(np.int64) for k, v in enc.items() if k in self.input_names}
        out = self.session.run(self.outputs, feeds)
        return BackendOutput(out[0], out[1], out[2] if len(out) > 2 else None, words)

    def forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        out = self.run(texts)
        return out.logits, out.features


class TorchBackend:
    def __init__(
        self,
        artifact: ClassifierArtifact,
        device: str | None = None,
        threads: int | None = None,
        bf16: bool = False,
        trace: bool = True,
    ):
        """`bf16`: the weights and every operation in bfloat16 (`torch-bf16`): on a CPU with
        bfloat16 instructions (AMX, AVX512-BF16) faster than float32 at full batches
        (docs/results.md#bfloat16-through-torch-2026-12-08); elsewhere emulated, and slower.
        `trace`: on a CPU, run it as a traced graph (False: eager, for comparison)."""
        import torch

        from services.classifier.modeling import IntentClassifier

        if threads:
            torch.set_num_threads(threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = IntentClassifier.from_pretrained(artifact.model_dir).to(device)
        if bf16:
            model = model.to(torch.bfloat16)
        self._init(model, _tokenizer(artifact), artifact.max_seq_length)
        if bf16:
            self.name = "torch-bf16"
            if trace and self.device.type == "cpu":
                self._trace()

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
        self.tokenizer = _TransformersTokenizer(tokenizer, max_length, tensors="pt")
        self.max_length = max_length
        self.name = f"torch-{self.device.type}"
        self._graph = None  # the traced forward (CPU bfloat16), or None: eager

    def _trace(self) -> None:
        """The forward traced and frozen (TorchScript): oneDNN then fuses the bfloat16 ops,
        which shortens a single text's run most, where per-op overhead dominates
        (docs/results.md#bfloat16-through-torch-2026-12-08). Traced once on a two-text
        batch; the graph takes any batch size and length, because the encoder's mask
        handling that the tracer reports as fixed (no extra padding, not causal) is fixed for
        an encoder."""
        import logging
        import warnings

        torch = self.torch
        model = self.model
        tagged = getattr(model, "tagger", None) is not None

        class Outputs(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                out = self.model(input_ids=input_ids, attention_mask=attention_mask)
                if tagged:
                    return out.logits, out.features, out.tag_logits
                return out.logits, out.features

        enc = self.tokenizer(["trace the classifier", "a longer text to trace it with"])
        example = (enc["input_ids"], enc["attention_mask"])
        # Freezing probes every attribute of the model, deprecated ones (a FutureWarning)
        # and `loss_function` (a "loss_type=None" notice) included: neither concerns serving.
        hf_logger = logging.getLogger("transformers")
        level = hf_logger.level
        hf_logger.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", FutureWarning)
                traced = torch.jit.trace(Outputs().eval(), example, check_trace=False)
                self._graph = torch.jit.freeze(traced)
        finally:
            hf_logger.setLevel(level)

    def run(self, texts: list[str]) -> BackendOutput:
        words = None
        if getattr(self.model, "tagger", None) is not None:
            enc, words = self.tokenizer.words(texts)
        else:
            enc = self.tokenizer(texts)
        ids = enc["input_ids"].to(self.device)
        mask = enc["attention_mask"].to(self.device)
        with self.torch.inference_mode():
            if self._graph is not None:
                logits, features, *tagged = self._graph(ids, mask)
                tag_logits = tagged[0] if tagged else None
            else:
                out = self.model(input_ids=ids, attention_mask=mask)
                logits, features, tag_logits = out.logits, out.features, out.tag_logits
        tags = tag_logits.float().cpu().numpy() if tag_logits is not None else None
        return BackendOutput(
            logits.float().cpu().numpy(), features.float().cpu().numpy(), tags, words
        )

    def forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        out = self.run(texts)
        return out.logits, out.features


# What `load_backend` takes (and the evaluation scripts' --backend).
KINDS = ("onnx", "onnx-int8", "torch", "torch-bf16")


def load_backend(artifact: ClassifierArtifact, kind: str = "onnx", **kwargs) -> Backend:
    """`kind`: "onnx" (fp32), "onnx-int8", "torch" or "torch-bf16"."""
    if kind == "onnx":
        return OnnxBackend(artifact, quantized=False, **kwargs)
    if kind == "onnx-int8":
        return OnnxBackend(artifact, quantized=True, **kwargs)
    if kind == "torch":
        return TorchBackend(artifact, **kwargs)
    if kind == "torch-bf16":
        return TorchBackend(artifact, bf16=True, **kwargs)
    raise ValueError(f"unknown backend {kind!r}; choose onnx, onnx-int8, torch or torch-bf16")


def forward_batched(
    backend: Backend, texts: list[str], batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Run many texts in length-sorted batches (less padding), results in input order."""
    logits, feats, _ = run_batched(backend, texts, batch_size, tagged=False)
    return logits, feats


def run_batched(
    backend: Backend, texts: list[str], batch_size: int = 64, tagged: bool = True
) -> tuple[np.ndarray, np.ndarray, list | None]:
    """`forward_batched` plus, for a joint model, each text's (tag logits, words)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    logits, feats = [None] * len(texts), [None] * len(texts)
    tagging: list | None = None
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = [texts[i] for i in idx]
        if tagged:
            out = backend.run(batch)
            lg, ft = out.logits, out.features
            if out.tag_logits is not None:
                tagging = tagging or [None] * len(texts)
                for j, i in enumerate(idx):
                    tagging[i] = (out.tag_logits[j], out.words[j])
        else:
            lg, ft = backend.forward(batch)
        for j, i in enumerate(idx):
            logits[i], feats[i] = lg[j], ft[j]
    return np.stack(logits), np.stack(feats), tagging
