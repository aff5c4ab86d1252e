"""Loads a generator artifact and answers batches of requests.

The model writes a delexicalised reply ("Okay, timer set for <duration>."); the reply is
cleaned, filled from the request's slots and facts, and checked (`text.check_reply`). A reply
that fails a check is replaced by the rule-based template filler's reply and marked as such,
so a client never sees an invented number or a bare placeholder.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from services.common.batcher import usable_cores
from services.common.files import read_manifest as common_read_manifest
from services.generator.text import (
    ReplyDomain,
    check_reply,
    clean_output,
    default_domain,
    source_text,
)

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MODEL_DIR = "model"
PACK_DIR = "pack"  # a copy of the assistant pack the model was trained for


class ArtifactError(ValueError):
    """The directory is not a usable generator artifact."""


@dataclass(frozen=True)
class GenerationRequest:
    intent: str
    text: str
    slots: dict[str, str] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    max_new_tokens: int = 48
    raw_intent: str | None = None  # picks the fallback template when the model's reply fails


@dataclass
class GenerationResult:
    reply: str
    generated_tokens: int
    source: str  # "model" | "template"
    delexicalised: str  # what the model wrote, before filling
    problems: list[str] = field(default_factory=list)  # why the model's reply was replaced


def read_manifest(artifact_dir: str | Path) -> dict:
    manifest = common_read_manifest(artifact_dir, "generator", ArtifactError)
    if not (Path(artifact_dir) / MODEL_DIR).is_dir():
        raise ArtifactError(f"{artifact_dir}: missing the {MODEL_DIR}/ directory")
    return manifest


def load_domain(artifact_dir: str | Path) -> ReplyDomain:
    """The artifact's own copy of its pack (older artifacts: the bundled CLINC150 pack)."""
    from parlance.pack import PackError, load_pack

    pack_dir = Path(artifact_dir) / PACK_DIR
    if not (pack_dir / "assistant.yml").is_file():
        return default_domain()
    try:
        return ReplyDomain(load_pack(pack_dir))
    except PackError as e:
        raise ArtifactError(f"{artifact_dir}: its pack copy is broken: {e}") from e


def compact_ids(token_ids: list[int], tokenizer) -> torch.Tensor:
    """The compact decoder's vocabulary: `token_ids` and the special tokens, sorted; row i of
    the compact embedding is tokenizer id `ids[i]`."""
    specials = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]
    return torch.tensor(sorted(set(token_ids) | {t for t in specials if t is not None}))


def compact_decoder(model, token_ids: list[int], tokenizer) -> torch.Tensor:
    """Narrow an EncoderDecoderModel's decoder vocabulary to `token_ids` (plus its special
    tokens), in place; returns the compact-id -> tokenizer-id map. Greedy outputs are
    unchanged whenever the full model's choice lies in `token_ids`; otherwise the model is
    kept from writing a token no template contains."""
    ids = compact_ids(token_ids, tokenizer)
    dec = model.decoder
    emb, head = dec.get_input_embeddings(), dec.get_output_embeddings()
    new_emb = torch.nn.Embedding(len(ids), emb.weight.shape[1])
    new_emb.weight.data = emb.weight.data[ids].clone()
    new_head = torch.nn.Linear(head.weight.shape[1], len(ids))
    new_head.weight.data = head.weight.data[ids].clone()
    bias = head.bias if head.bias is not None else torch.zeros(head.weight.shape[0])
    new_head.bias.data = bias.data[ids].clone()
    dec.set_input_embeddings(new_emb)
    dec.set_output_embeddings(new_head)
    position = {int(t): i for i, t in enumerate(ids)}
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id = position[tokenizer.cls_token_id]
        cfg.pad_token_id = position[tokenizer.pad_token_id]
        cfg.eos_token_id = position[tokenizer.sep_token_id]
    model.config.decoder.vocab_size = len(ids)
    return ids


BACKENDS = ("auto", "onnx", "onnx-int8", "torch")
# int8 is served by default when its replies on val are this close to fp32's (exact match
# with the template and slot fidelity, as shares): the quality bar the issue set for speed.
INT8_TOLERANCE = 0.005
# The share of validation requests on which the fp32 ONNX decoder must give generate's reply
# for `auto` to serve ONNX (float rounding may flip a near tie now and then, not more).
AGREEMENT = 0.98
# The exported graphs' inputs and outputs as services/generator/onnx_decoding.py reads them
# (training/generator_export.py writes it): raised when they change, so that a service meets
# an older export with a message, not a crash. 2: per-row positions, self_attention_mask.
ONNX_FORMAT = 2


def onnx_unavailable(
    kind: str, artifact_dir: Path, manifest: dict, *, quantize: str, compact_vocabulary: bool,
    num_beams: int, device: torch.device,
) -> str | None:  # fmt: skip
    """Why the ONNX decoder `kind` ("onnx" or "onnx-int8") cannot serve this artifact with
    these settings (None: it can)."""
    record = manifest.get("backends", {}).get(kind)
    if not record:
        return f"the artifact has no {kind} decoder (python -m training.generator_export adds it)"
    if record.get("format") != ONNX_FORMAT:
        return (
            f"its {kind} graphs are of an older format (python -m training.generator_export "
            "writes the current one)"
        )
    for key in ("encoder", "decoder_step"):
        if not (artifact_dir / record[key]).is_file():
            return f"{artifact_dir / record[key]}: missing"
    if num_beams != 1:
        return f"num_beams {num_beams}: the ONNX decoder is greedy"
    if quantize != "none":
        return f"quantize {quantize!r} is torch's"
    if not compact_vocabulary:
        return "it is exported with the compact vocabulary"
    if device.type != "cpu":
        return f"device {device}: the ONNX decoder runs on the CPU"
    return None


def agreement_holds(manifest: dict) -> bool:
    """The fp32 graphs gave `generate`'s replies at export (AGREEMENT of the compared
    validation requests): what `auto` needs to serve ONNX at all."""
    agreement = manifest.get("backends", {}).get("onnx", {}).get("agreement", {})
    return agreement.get("compared", 0) > 0 and agreement.get("identical", 0) >= AGREEMENT


def onnx_threads(workers: int) -> int:
    """ONNX Runtime's intra-op threads when none are set. Beside other workers, one each:
    measured on 2 cores, two batches at once on one thread each did nearly twice the replies
    of one (benchmarks.generator's model rows), and one batch on two threads did no better
    than on one. A single worker gets every core but one, which the decoding loop's Python
    and the HTTP server use (docs/results.md#decoding-backends)."""
    return 1 if workers > 1 else max(1, usable_cores() - 1)


def int8_holds(manifest: dict) -> bool:
    """int8's validation figures within INT8_TOLERANCE of fp32's (both recorded at export)."""
    backends = manifest.get("backends", {})
    fp32, int8 = (backends.get(k, {}).get("val") for k in ("onnx", "onnx-int8"))
    if not fp32 or not int8:
        return False
    return all(
        int8[k] >= fp32[k] - INT8_TOLERANCE for k in ("template_exact_match", "slot_fidelity")
    )


class GeneratorModel:
    def __init__(
        self,
        artifact_dir: str | Path,
        num_beams: int | None = None,
        device: str | None = None,
        threads: int | None = None,
        quantize: str = "none",
        compact_vocabulary: bool = True,
        domain: ReplyDomain | None = None,
        backend: str = "auto",
        workers: int | None = None,
    ):
        from transformers import AutoTokenizer

        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if quantize not in ("none", "int8"):
            raise ValueError(f"quantize must be 'none' or 'int8', got {quantize!r}")
        self.artifact_dir = Path(artifact_dir)
        self.manifest = read_manifest(artifact_dir)
        self.threads = threads
        if threads:
            torch.set_num_threads(threads)
        # Batches may run on several threads at once (the ONNX backends, `workers`): the
        # tokenizer's padding settings and the lazy torch load are not safe to race.
        self._lock = threading.RLock()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.artifact_dir / MODEL_DIR))
        tok = self.tokenizer
        self._stop_ids = {tok.pad_token_id, tok.eos_token_id, tok.sep_token_id} - {None}
        gen = self.manifest.get("generation", {})
        self.max_source_length = int(gen.get("max_source_length", 96))
        self.no_repeat_ngram_size = int(gen.get("no_repeat_ngram_size", 3))
        self.num_beams = int(num_beams or gen.get("num_beams", 1))
        self.quantize = quantize
        # A bert2bert decoder only ever needs the templates' tokens: narrowing its embedding
        # and output layer to them (from ~30.5k rows to ~500) takes the LM head, half of
        # each decoding step, off the critical path (docs/results.md measures it).
        vocab = gen.get("decoder_vocabulary")
        self._compact_vocabulary = bool(
            vocab and compact_vocabulary and self.manifest.get("architecture") == "bert2bert"
        )
        self._vocab: torch.Tensor | None = (
            compact_ids(vocab, self.tokenizer) if self._compact_vocabulary else None
        )
        self._vocab_ids = self._vocab.tolist() if self._vocab is not None else None

        def why_not(kind: str) -> str | None:
            return onnx_unavailable(
                kind,
                self.artifact_dir,
                self.manifest,
                quantize=quantize,
                compact_vocabulary=self._compact_vocabulary,
                num_beams=self.num_beams,
                device=self.device,
            )

        if backend == "auto":
            candidates = ["onnx-int8", "onnx"] if int8_holds(self.manifest) else ["onnx"]
            if not agreement_holds(self.manifest):
                candidates = []
            backend = next((k for k in candidates if not why_not(k)), "torch")
        elif backend != "torch" and (reason := why_not(backend)):
            raise ArtifactError(f"{artifact_dir}: the {backend} backend cannot serve it: {reason}")
        self.backend = backend
        # Batches decoded side by side, a thread each: ONNX sessions only (torch's thread
        # pool is per calling thread, docs/results.md); by default one per core.
        self.workers = 1 if backend == "torch" else (workers or usable_cores())
        self._model = None
        try:
            self._onnx = self._load_onnx(backend) if backend != "torch" else None
        except ValueError as e:  # graphs that do not match what the manifest says
            raise ArtifactError(f"{artifact_dir}: {e}") from e
        if self.backend == "torch":
            self._load_torch()
        self.domain = domain or load_domain(self.artifact_dir)
        self.filler = self.domain.filler

    def _load_torch(self):
        """The PyTorch model: the torch backend's, and beam search's on the ONNX one (loaded
        when a caller first asks for beams)."""
        with self._lock:
            if self._model is None:
                self._model = self._read_torch_model()
            return self._model

    def _read_torch_model(self):
        from transformers import AutoModelForSeq2SeqLM
        from transformers.utils import logging as hf_logging

        # a per-tensor "Loading weights" bar in a service's log says nothing a reader can use
        hf_logging.disable_progress_bar()
        model = AutoModelForSeq2SeqLM.from_pretrained(str(self.artifact_dir / MODEL_DIR))
        model = model.to(self.device).eval()
        if self._vocab is not None:  # the same ids as self._vocab
            compact_decoder(
                model, self.manifest["generation"]["decoder_vocabulary"], self.tokenizer
            )
        if self.quantize == "int8":
            # Dynamic int8 for the Linear layers (CPU only); measured in docs/results.md.
            model = torch.ao.quantization.quantize_dynamic(
                model.cpu(), {torch.nn.Linear}, dtype=torch.qint8
            )
            self.device = torch.device("cpu")
        return model

    @property
    def model(self):
        return self._load_torch()

    def _load_onnx(self, kind: str):
        from services.generator.onnx_decoding import OnnxGreedyDecoder

        record = self.manifest["backends"][kind]
        position = {int(t): i for i, t in enumerate(self._vocab.tolist())}
        tok = self.tokenizer
        return OnnxGreedyDecoder(
            self.artifact_dir / record["encoder"],
            self.artifact_dir / record["decoder_step"],
            start_id=position[tok.cls_token_id],
            end_id=position[tok.sep_token_id],
            pad_id=position[tok.pad_token_id],
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            threads=self.threads or onnx_threads(self.workers),
        )

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "unknown"))

    def info(self) -> dict:
        return {
            "version": self.version,
            "base_model": self.manifest.get("base_model"),
            "preset": self.manifest.get("preset"),
            "num_beams": self.num_beams,
            "quantize": self.quantize,
            "backend": self.backend,
            "compact_vocabulary": self._vocab is not None,
            "device": str(self.device),
            "metrics": self.manifest.get("metrics", {}),
        }

    @torch.inference_mode()
    def generate_delexicalised(
        self, sources: list[str], max_new_tokens: list[int], num_beams: int | None = None
    ) -> list[tuple[str, int]]:
        """(cleaned delexicalised reply, tokens generated) for each serialised source.

        One `generate` call with the largest budget; each row is then cut to its own budget.
        With greedy decoding that equals generating it alone with that budget (a row's tokens
        do not depend on how long the others run); beam search gets the same treatment."""
        beams = num_beams or self.num_beams
        if self._onnx is not None and beams == 1:
            # no torch on this path: its thread pool is per calling thread, and several
            # workers calling it at once contend (measured slower at one client)
            ids, mask = self.encode(sources)
            rows = self._onnx.generate(ids, mask, max(max_new_tokens))
            return [
                self.text_of(row[1:], limit)  # no start token
                for row, limit in zip(rows, max_new_tokens, strict=True)
            ]
        model = self._load_torch()
        enc = self._tokenize(sources, "pt").to(self.device)
        out = model.generate(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            max_new_tokens=max(max_new_tokens),
            num_beams=beams,
            do_sample=False,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
        ).cpu()
        return [
            self.text_of(row, limit)
            for row, limit in zip(out[:, 1:].tolist(), max_new_tokens, strict=True)  # no start
        ]

    def _tokenize(self, sources: list[str], tensors: str):
        with self._lock:
            return self.tokenizer(
                sources,
                padding=True,
                truncation=True,
                max_length=self.max_source_length,
                return_tensors=tensors,
            )

    def encode(self, sources: list[str]) -> tuple:
        """Serialised sources -> (input_ids, attention_mask), numpy, padded to the longest."""
        enc = self._tokenize(sources, "np")
        return enc["input_ids"], enc["attention_mask"]

    def text_of(self, row: list[int], limit: int) -> tuple[str, int]:
        """A row of decoder ids (no start token) -> (cleaned delexicalised reply, tokens
        generated): cut at its budget and its first stop token."""
        if self._vocab_ids is not None:
            row = [self._vocab_ids[t] for t in row]  # compact -> tokenizer
        row = row[:limit]
        n = next((i + 1 for i, tok in enumerate(row) if tok in self._stop_ids), len(row))
        text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
        return clean_output(text, self.domain), n

    @property
    def decoder(self):
        """The ONNX decoder (continuous batching runs it), None on the torch backend."""
        return self._onnx

    def result_of(self, request: GenerationRequest, tokens: list[int]) -> GenerationResult:
        """What a request gets from its decoded row (decoder ids, the start token first)."""
        delex, n = self.text_of(tokens[1:], request.max_new_tokens)
        return self._finish(request, delex, n)

    def source_of(self, request: GenerationRequest) -> str:
        return source_text(request.intent, request.text, request.slots, request.facts)

    def respond(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        sources = [self.source_of(r) for r in requests]
        outputs = self.generate_delexicalised(sources, [r.max_new_tokens for r in requests])
        return [self._finish(r, delex, n) for r, (delex, n) in zip(requests, outputs, strict=True)]

    def _finish(self, r: GenerationRequest, delex: str, n: int) -> GenerationResult:
        check = check_reply(delex, r.text, r.slots, r.facts, self.domain)
        if check.ok:
            return GenerationResult(check.reply, n, "model", delex)
        fallback = (
            self.filler.reply_for(r.raw_intent, r.intent, r.text, r.slots, r.facts)
            if r.raw_intent
            else self.filler.reply(r.intent, r.text, r.slots, r.facts)
        )
        return GenerationResult(fallback or check.reply, n, "template", delex, check.problems())

    def warmup(self) -> float:
        started = time.perf_counter()
        generated = self.domain.label_map.generated
        if generated:
            self.respond([GenerationRequest(generated[0], "hello there", max_new_tokens=8)])
        return time.perf_counter() - started
