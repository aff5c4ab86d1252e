"""Loads a generator artifact and answers batches of requests.

The model writes a delexicalised reply ("Okay, timer set for <duration>."); the reply is
cleaned, filled from the request's slots and facts, and checked (`text.check_reply`). A reply
that fails a check is replaced by the rule-based template filler's reply and marked as such,
so a client never sees an invented number or a bare placeholder.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from services.common.responses import TemplateFiller
from services.generator.text import check_reply, clean_output, source_text

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MODEL_DIR = "model"


class ArtifactError(ValueError):
    """The directory is not a usable generator artifact."""


@dataclass(frozen=True)
class GenerationRequest:
    intent: str
    text: str
    slots: dict[str, str] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    max_new_tokens: int = 48


@dataclass
class GenerationResult:
    reply: str
    generated_tokens: int
    source: str  # "model" | "template"
    delexicalised: str  # what the model wrote, before filling
    problems: list[str] = field(default_factory=list)  # why the model's reply was replaced


def read_manifest(artifact_dir: str | Path) -> dict:
    path = Path(artifact_dir) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{artifact_dir}: no {MANIFEST}; is this a generator artifact?")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from e
    if manifest.get("kind") != "generator":
        raise ArtifactError(f"{path}: kind is {manifest.get('kind')!r}, expected 'generator'")
    if not (Path(artifact_dir) / MODEL_DIR).is_dir():
        raise ArtifactError(f"{artifact_dir}: missing the {MODEL_DIR}/ directory")
    return manifest


class GeneratorModel:
    def __init__(self, artifact_dir: str | Path, num_beams: int | None = None,
                 device: str | None = None, threads: int | None = None,
                 quantize: str = "none"):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.artifact_dir = Path(artifact_dir)
        self.manifest = read_manifest(artifact_dir)
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model_dir = self.artifact_dir / MODEL_DIR
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForSeq2SeqLM.from_pretrained(str(model_dir)).to(self.device).eval()
        self.quantize = quantize
        if quantize == "int8":
            # Dynamic int8 for the Linear layers (CPU only); measured in docs/results.md.
            self.model = torch.ao.quantization.quantize_dynamic(
                self.model.cpu(), {torch.nn.Linear}, dtype=torch.qint8)
            self.device = torch.device("cpu")
        elif quantize != "none":
            raise ValueError(f"quantize must be 'none' or 'int8', got {quantize!r}")
        gen = self.manifest.get("generation", {})
        self.max_source_length = int(gen.get("max_source_length", 96))
        self.no_repeat_ngram_size = int(gen.get("no_repeat_ngram_size", 3))
        self.num_beams = int(num_beams or gen.get("num_beams", 1))
        self.filler = TemplateFiller()

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "unknown"))

    def info(self) -> dict:
        return {"version": self.version, "base_model": self.manifest.get("base_model"),
                "preset": self.manifest.get("preset"), "num_beams": self.num_beams,
                "quantize": self.quantize,
                "device": str(self.device), "metrics": self.manifest.get("metrics", {})}

    @torch.inference_mode()
    def generate_delexicalised(self, sources: list[str], max_new_tokens: int,
                               num_beams: int | None = None) -> list[tuple[str, int]]:
        """(cleaned delexicalised reply, tokens generated) for each serialised source."""
        enc = self.tokenizer(sources, padding=True, truncation=True,
                             max_length=self.max_source_length, return_tensors="pt").to(self.device)
        out = self.model.generate(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
            max_new_tokens=max_new_tokens, num_beams=num_beams or self.num_beams,
            do_sample=False, no_repeat_ngram_size=self.no_repeat_ngram_size)
        # Strip the decoder start token; count real tokens (not padding) per row.
        seqs = out[:, 1:]
        special = {self.tokenizer.pad_token_id, self.tokenizer.eos_token_id,
                   self.tokenizer.sep_token_id} - {None}
        results = []
        for row in seqs.tolist():
            n = 0
            for tok in row:
                n += 1
                if tok in special:
                    break
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            results.append((clean_output(text), n))
        return results

    def respond(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """One generate call for the whole batch (with the largest `max_new_tokens`; greedy
        decoding is prefix-stable, so shorter limits are applied per request afterwards)."""
        if not requests:
            return []
        sources = [source_text(r.intent, r.text, r.slots, r.facts) for r in requests]
        limit = max(r.max_new_tokens for r in requests)
        if self.num_beams == 1 and len({r.max_new_tokens for r in requests}) > 1:
            outputs = self._generate_truncated(sources, requests, limit)
        else:
            outputs = self.generate_delexicalised(sources, limit)
        return [self._finish(r, delex, n) for r, (delex, n) in zip(requests, outputs,
                                                                    strict=True)]

    def _generate_truncated(self, sources, requests, limit):
        enc_out = self.generate_delexicalised(sources, limit)
        out = []
        for (delex, n), r in zip(enc_out, requests, strict=True):
            if n > r.max_new_tokens:
                ids = self.tokenizer(delex, add_special_tokens=False)["input_ids"]
                delex = clean_output(self.tokenizer.decode(ids[: r.max_new_tokens]))
                n = r.max_new_tokens
            out.append((delex, n))
        return out

    def _finish(self, r: GenerationRequest, delex: str, n: int) -> GenerationResult:
        check = check_reply(delex, r.text, r.slots, r.facts)
        if check.ok:
            return GenerationResult(check.reply, n, "model", delex)
        fallback = self.filler.reply(r.intent, r.text, r.slots, r.facts)
        return GenerationResult(fallback or check.reply, n, "template", delex, check.problems())

    def warmup(self) -> float:
        started = time.perf_counter()
        self.respond([GenerationRequest("small_talk", "hello there", max_new_tokens=8)])
        return time.perf_counter() - started
