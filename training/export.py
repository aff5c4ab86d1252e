"""ONNX export of the merged classifier (with its slot tagger when it has one: a third
output, `tag_logits`), and dynamic int8 quantisation.

`torch.onnx.export` + `onnxruntime.quantization` directly: `optimum[onnxruntime]` would pin
transformers back to 4.x, and this graph (encoder + pooling + linear head, two outputs) is
simple enough not to need it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)


class _OnnxWrapper(nn.Module):
    """Positional inputs and a tuple output, which is what the exporter wants."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        if out.tag_logits is not None:
            return out.logits, out.features, out.tag_logits
        return out.logits, out.features


def export_onnx(model: nn.Module, path: str | Path, opset: int = 17) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    # eval() on the wrapper too: the exporter restores the *wrapper's* mode afterwards, and a
    # fresh wrapper is in training mode, which would switch dropout back on in `model`.
    wrapper = _OnnxWrapper(model.float().cpu()).eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    # Trace with real padding in the mask: with an all-ones mask the attention code takes
    # a "no padding" shortcut and the exported graph would ignore the mask.
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3], dtype=torch.long)
    # The TorchScript exporter: mature for BERT-style graphs and exports dynamic batch and
    # sequence axes without tracing guards.
    outputs = ["logits", "features"]
    axes = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
        "logits": {0: "batch"},
        "features": {0: "batch"},
    }
    if getattr(model, "tagger", None) is not None:  # a joint model: the slot tagger too
        outputs.append("tag_logits")
        axes["tag_logits"] = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        # Understood and harmless here: the tracer notes Python-side shape checks (the
        # mask's padding length, `is_causal` of an encoder) that the dynamic axes cover, and
        # the index operator's caveat is about negative indices, which the graph never has.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        # the TorchScript exporter is chosen on purpose (see above)
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript")
        torch.onnx.export(
            wrapper,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    model.train(was_training)
    return path


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """Dynamic int8 with one scale per output channel of each weight matrix. Per-tensor
    scales (one per matrix) cost CLINC150's cpu classifier 0.7 points of in-scope accuracy;
    per channel it is within 0.1 point of fp32, at the same speed (docs/benchmarks.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs every tensor at INFO on the root logger, and advises shape-inference
    # pre-processing that only static quantisation needs: keep the training log readable.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
    return Path(dst)


def requantize(artifact_dir: str | Path, data_dir: str | None = None) -> dict:
    """An artifact's int8 model made again from its fp32 one (an artifact trained before
    per-channel quantisation), and its recorded int8 figures measured again on the pack's
    test split, which is what the service's int8 rule reads."""
    import json

    from services.classifier.artifact import MANIFEST, ClassifierArtifact
    from training.evaluate import evaluate_artifact, evaluation_data

    art = ClassifierArtifact.load(artifact_dir)
    quantize_int8(art.onnx_path(False), art.onnx_path(True))
    _, data = evaluation_data(art, data_dir=data_dir)
    report = evaluate_artifact(artifact_dir, data, "onnx-int8", splits=("test",))["test"]
    figures = {
        k: report[k]
        for k in ("inscope_accuracy", "oos_recall", "accuracy", "slot_f1")
        if k in report
    }
    manifest = json.loads((Path(artifact_dir) / MANIFEST).read_text())
    manifest.setdefault("backends", {})["onnx-int8"] = {
        **figures,
        "quantization": "dynamic per-channel",
    }
    (Path(artifact_dir) / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest["backends"]


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        description="Quantise a classifier artifact's int8 model again (per channel) and "
        "record its test figures: python -m training.export --requantize ARTIFACT"
    )
    parser.add_argument("--requantize", required=True, metavar="ARTIFACT")
    parser.add_argument("--data-dir", default=None, help="default $CLINC150_DIR")
    args = parser.parse_args()
    backends = requantize(args.requantize, args.data_dir)
    for kind in ("onnx", "onnx-int8"):
        figures = {
            k: round(100 * v, 2) for k, v in backends.get(kind, {}).items() if isinstance(v, float)
        }
        sys.stdout.write(f"{kind}: {figures}\n")
