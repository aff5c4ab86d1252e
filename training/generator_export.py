"""ONNX export of a bert2bert generator for greedy decoding with a key/value cache.

Two graphs, written to the artifact's `onnx/`:
- `encoder.onnx`: the source once -> each decoder layer's cross-attention keys and values
  (the projections of the encoder's output that every decoding step reuses);
- `decoder_step.onnx`: one token per row -> the next token's logits over the compact
  vocabulary, and the self-attention keys and values with this step's appended. Each row
  has its own position and a mask over the cached steps, so that requests can join and
  leave a running batch between steps (continuous batching).

`services/generator/onnx_decoding.py` runs them. Written against the Hugging Face BERT
modules' own weights rather than through `EncoderDecoderModel.forward`: its cache is a
Python object the exporter cannot carry across steps, and Optimum's exporter would pin
transformers back to 4.x. The step is checked token for token against `generate`
(`check_agreement`, recorded in the manifest, and tests/test_generator_onnx.py).

    python -m training.generator_export ARTIFACT   # an artifact trained without them

`encoder.int8.onnx` and `decoder_step.int8.onnx` are their int8 versions
(`quantize_generator`); the manifest records both backends' validation figures, and the
service serves int8 where they hold (services/generator/model.py::choose_backend).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from services.generator.model import ONNX_FORMAT

logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"
ENCODER = "encoder.onnx"
DECODER_STEP = "decoder_step.onnx"
ENCODER_INT8 = "encoder.int8.onnx"
DECODER_STEP_INT8 = "decoder_step.int8.onnx"


def _heads(x: torch.Tensor, heads: int, head_size: int, length=-1) -> torch.Tensor:
    """[batch, length, hidden] -> [batch, heads, length, head size]. Sizes are Python ints
    where they are known (the batch left to -1, a step's length 1): sizes read off a tensor
    trace into chains of Shape and Gather nodes, which would run at every decoding step."""
    return x.view(-1, length, heads, head_size).transpose(1, 2)


def _attend(q, k, v, hidden: int, scaling: float, additive_mask=None) -> torch.Tensor:
    """One query token's attention: [batch, heads, 1, d] -> [batch, 1, hidden]."""
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling
    if additive_mask is not None:
        scores = scores + additive_mask
    out = torch.matmul(torch.softmax(scores, dim=-1), v)
    return out.transpose(1, 2).reshape(-1, 1, hidden)


class EncoderGraph(nn.Module):
    """input_ids, attention_mask -> (cross key, cross value) for each decoder layer."""

    def __init__(self, model):
        super().__init__()
        self.encoder = model.encoder
        self.proj = getattr(model, "enc_to_dec_proj", None)
        self.layers = model.decoder.bert.encoder.layer
        self.heads = model.decoder.config.num_attention_heads
        self.head_size = model.decoder.config.hidden_size // self.heads

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        if self.proj is not None:
            hidden = self.proj(hidden)
        out = []
        for layer in self.layers:
            cross = layer.crossattention.self
            for proj in (cross.key, cross.value):
                out.append(_heads(proj(hidden), self.heads, self.head_size, hidden.shape[1]))
        return tuple(out)


class DecoderStepGraph(nn.Module):
    """One decoding step of a BertLMHeadModel with cross-attention, the same arithmetic as
    its forward with a cache: embeddings (word, position, token type 0), per layer a
    self-attention over the cached keys and values plus this token's, cross-attention
    over the encoder's, the feed-forward block; the LM head."""

    def __init__(self, decoder):
        super().__init__()
        bert = decoder.bert
        self.embeddings = bert.embeddings
        self.layers = bert.encoder.layer
        self.head = decoder.cls
        self.hidden = decoder.config.hidden_size
        self.heads = decoder.config.num_attention_heads
        self.head_size = self.hidden // self.heads
        self.scaling = self.head_size**-0.5

    def forward(self, input_ids, position_ids, encoder_attention_mask, self_attention_mask, *cache):
        n = len(self.layers)
        cross, past = cache[: 2 * n], cache[2 * n :]
        emb = self.embeddings
        h = (
            emb.word_embeddings(input_ids)
            + emb.token_type_embeddings.weight[0]
            + emb.position_embeddings(position_ids)
        )
        h = emb.LayerNorm(h)
        # The same additive mask as the model's: 0 where the source has a token, the dtype's
        # minimum on padding.
        mask = encoder_attention_mask[:, None, None, :].to(h.dtype)
        mask = (1.0 - mask) * torch.finfo(h.dtype).min
        # Over the cached steps and this one: rows that joined a running batch later have
        # fewer steps than the batch's cache is long, and their first columns are padding.
        own = self_attention_mask[:, None, None, :].to(h.dtype)
        own = (1.0 - own) * torch.finfo(h.dtype).min
        present = []

        def heads(x):
            return _heads(x, self.heads, self.head_size, 1)

        for i, layer in enumerate(self.layers):
            sa = layer.attention.self
            k = torch.cat([past[2 * i], heads(sa.key(h))], dim=2)
            v = torch.cat([past[2 * i + 1], heads(sa.value(h))], dim=2)
            present += [k, v]
            a = _attend(heads(sa.query(h)), k, v, self.hidden, self.scaling, own)
            h = layer.attention.output(a, h)
            ca = layer.crossattention.self
            a = _attend(heads(ca.query(h)), cross[2 * i], cross[2 * i + 1], self.hidden,
                        self.scaling, mask)  # fmt: skip
            h = layer.crossattention.output(a, h)
            h = layer.output(layer.intermediate(h), h)
        logits = self.head(h).squeeze(1)
        return (logits, *present)


def cache_names(layers: int) -> tuple[list[str], list[str], list[str]]:
    """(cross-attention inputs, past inputs, present outputs) of the step graph."""
    cross = [f"cross_{kv}_{i}" for i in range(layers) for kv in ("key", "value")]
    past = [f"past_{kv}_{i}" for i in range(layers) for kv in ("key", "value")]
    present = [f"present_{kv}_{i}" for i in range(layers) for kv in ("key", "value")]
    return cross, past, present


def _export(module, args, path: Path, inputs, outputs, axes, opset: int) -> None:
    with warnings.catch_warnings():
        # Understood and harmless: the tracer's notes on Python-side shape checks, which the
        # dynamic axes cover; the TorchScript exporter is chosen on purpose (training.export).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript")
        # about negative indices, which these graphs never have
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )


@torch.inference_mode(False)
def export_generator(model, out_dir: str | Path, opset: int = 17) -> Path:
    """Write encoder.onnx and decoder_step.onnx of `model` (an EncoderDecoderModel whose
    decoder is BERT, its vocabulary already compacted as served) under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    cfg = model.decoder.config
    layers, heads = cfg.num_hidden_layers, cfg.num_attention_heads
    head_size = cfg.hidden_size // heads
    cross_names, past_names, present_names = cache_names(layers)
    ids = torch.ones(2, 7, dtype=torch.long)
    # Real padding in the traced mask, or the attention code takes a no-padding shortcut.
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], dtype=torch.long)
    with torch.no_grad():
        encoder = EncoderGraph(model).eval()
        _export(
            encoder,
            (ids, mask),
            out / ENCODER,
            ["input_ids", "attention_mask"],
            cross_names,
            {
                "input_ids": {0: "batch", 1: "source"},
                "attention_mask": {0: "batch", 1: "source"},
                **{n: {0: "batch", 2: "source"} for n in cross_names},
            },
            opset,
        )
        cross = encoder(ids, mask)
        past = [torch.zeros(2, heads, 3, head_size) for _ in past_names]
        step = DecoderStepGraph(model.decoder).eval()
        _export(
            step,
            (
                torch.ones(2, 1, dtype=torch.long),
                torch.tensor([[3], [1]]),
                mask,
                torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]]),  # the second row joined later
                *cross,
                *past,
            ),
            out / DECODER_STEP,
            [
                "input_ids",
                "position_ids",
                "encoder_attention_mask",
                "self_attention_mask",
                *cross_names,
                *past_names,
            ],
            ["logits", *present_names],
            {
                "input_ids": {0: "batch"},
                "position_ids": {0: "batch"},
                "encoder_attention_mask": {0: "batch", 1: "source"},
                "self_attention_mask": {0: "batch", 1: "steps"},
                "logits": {0: "batch"},
                **{n: {0: "batch", 2: "source"} for n in cross_names},
                **{n: {0: "batch", 2: "past"} for n in past_names},
                **{n: {0: "batch", 2: "steps"} for n in present_names},
            },
            opset,
        )
    return out


def check_agreement(artifact_dir: str | Path, sources: list[str], batch_size: int = 16) -> dict:
    """Replies of the fp32 ONNX decoder against torch `generate` on the same sources
    (greedy): the share with the same reply text and token count."""
    from services.generator.model import GenerationRequest, GeneratorModel

    torch_gen = GeneratorModel(artifact_dir, backend="torch")
    onnx_gen = GeneratorModel(artifact_dir, backend="onnx", device="cpu")
    same = 0
    for i in range(0, len(sources), batch_size):
        chunk = sources[i : i + batch_size]
        budget = [GenerationRequest.max_new_tokens] * len(chunk)
        a = torch_gen.generate_delexicalised(chunk, budget)
        b = onnx_gen.generate_delexicalised(chunk, budget)
        same += sum(x == y for x, y in zip(a, b, strict=True))
    return {"compared": len(sources), "identical": round(same / max(1, len(sources)), 4)}


def can_export(manifest: dict) -> str | None:
    """Why this artifact cannot have the ONNX decoder, or None when it can."""
    if manifest.get("architecture") != "bert2bert":
        return f"architecture {manifest.get('architecture')!r}: the ONNX decoder is bert2bert's"
    if not manifest.get("generation", {}).get("decoder_vocabulary"):
        return "no decoder vocabulary in the manifest"
    return None


# What the int8 graphs are, recorded in the manifest (`backends.onnx-int8.quantization`).
QUANTIZATION = (
    "encoder: static per-channel u8s8, MinMax, FFN outputs fp32; decoder step: "
    "weight-only 8-bit (MatMulNBits), blocks of 128, int8 compute per row"
)


def quantize_generator(onnx_dir: Path, tokenize, sources: list[str], max_length: int) -> None:
    """encoder.int8.onnx and decoder_step.int8.onnx beside the fp32 graphs.

    The encoder, run once per request over ~40 tokens, is compute-bound: static int8 with
    the classifier's recipe (training.export.quantize_int8), its activation scales fixed from
    `sources`. A decoding step at small batches is bound by reading its weights: 8-bit
    weights in blocks, activations quantised per row at run time. Both give a request the
    same reply in any batch (fixed scales; per-row scales)."""
    from training.export import (
        calibration_batches,
        calibration_texts,
        quantize_int8,
        quantize_weight_only,
    )

    batches = calibration_batches(tokenize, calibration_texts(sources), max_length)
    quantize_int8(onnx_dir / ENCODER, onnx_dir / ENCODER_INT8, batches)
    quantize_weight_only(onnx_dir / DECODER_STEP, onnx_dir / DECODER_STEP_INT8)


def add_onnx(artifact_dir: str | Path, train_sources: list[str], val_examples: list) -> dict:
    """Export the artifact's ONNX decoder (fp32 and int8), check the fp32 one against
    `generate` on validation requests, score both on `val_examples` (the model's own
    replies), and record it all in its manifest (`backends`), which the service's auto
    backend reads. {} (the manifest untouched) when the architecture has no ONNX decoder:
    the artifact is then served by torch."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from services.generator.model import MANIFEST, MODEL_DIR, compact_decoder, read_manifest
    from services.generator.text import source_text
    from training.generator import GenerationArguments, evaluate_artifact

    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    why = can_export(manifest)
    if why:
        logger.info("no ONNX decoder: %s; served by torch generate", why)
        return {}
    model_dir = artifact_dir / MODEL_DIR
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(model_dir))
    compact_decoder(model, manifest["generation"]["decoder_vocabulary"], tokenizer)
    onnx_dir = artifact_dir / ONNX_DIR
    export_generator(model, onnx_dir)
    max_length = int(manifest["generation"].get("max_source_length", 96))

    def tokenize(texts):
        return tokenizer(texts, padding=True, truncation=True, max_length=max_length)

    quantize_generator(onnx_dir, tokenize, train_sources, max_length)
    backends = {
        "onnx": {
            "encoder": f"{ONNX_DIR}/{ENCODER}",
            "decoder_step": f"{ONNX_DIR}/{DECODER_STEP}",
            "format": ONNX_FORMAT,
        },
        "onnx-int8": {
            "encoder": f"{ONNX_DIR}/{ENCODER_INT8}",
            "decoder_step": f"{ONNX_DIR}/{DECODER_STEP_INT8}",
            "format": ONNX_FORMAT,
            "quantization": QUANTIZATION,
        },
    }

    def write() -> None:
        manifest = json.loads((artifact_dir / MANIFEST).read_text())
        manifest["backends"] = backends
        (artifact_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))

    write()  # the service finds the graphs through the manifest, the checks too
    sources = [source_text(e.core_intent, e.text, e.slots, e.facts) for e in val_examples]
    backends["onnx"]["agreement"] = check_agreement(
        artifact_dir, sources[:: max(1, len(sources) // 256)][:256]
    )
    for kind in ("onnx", "onnx-int8"):
        report = evaluate_artifact(
            artifact_dir,
            val_examples,
            GenerationArguments(latency_samples=1),
            backend=kind,
            device="cpu",  # the graphs run on ONNX Runtime's CPU provider, also on a GPU box
        )
        backends[kind]["val"] = {
            k: report["model"][k] for k in ("template_exact_match", "slot_fidelity", "chrf")
        }
    write()
    logger.info(
        "ONNX decoder written: identical to generate on %s; val %s",
        backends["onnx"]["agreement"],
        {k: v["val"] for k, v in backends.items()},
    )
    return backends


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        description="Add the ONNX decoder (encoder once, one step per token with a key/value "
        "cache; fp32 and int8) to a bert2bert generator artifact trained without it, checked "
        "against torch generate and scored on the validation requests rebuilt as it was "
        "trained: python -m training.generator_export ARTIFACT"
    )
    parser.add_argument("artifact")
    parser.add_argument("--data-dir", default=None, help="CLINC150 directory (default: as trained)")
    args = parser.parse_args()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    from services.generator.text import source_text
    from training.cli import quiet_libraries
    from training.generator_eval import artifact_examples

    quiet_libraries()
    _, examples = artifact_examples(args.artifact, args.data_dir)
    train = [source_text(e.core_intent, e.text, e.slots, e.facts) for e in examples["train"]]
    backends = add_onnx(args.artifact, train, examples["val"])
    sys.stdout.write(json.dumps(backends, indent=2) + "\n")
