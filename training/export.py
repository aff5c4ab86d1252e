"""ONNX export of the merged classifier (with its slot tagger when it has one: a third
output, `tag_logits`), and static int8 quantisation.

`torch.onnx.export` + `onnxruntime.quantization` directly: `optimum[onnxruntime]` would pin
transformers back to 4.x, and this graph (encoder + pooling + linear head, two outputs) is
simple enough not to need it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


# What the artifact's int8 model is, recorded in its manifest (`backends.onnx-int8`, with
# `batch_independent`); the service serves int8 by default only when a query's answer does
# not depend on its batch (docs/results.md#backends).
QUANTIZATION = "static per-channel u8s8, MinMax, FFN outputs fp32"
SMOOTHED = "static per-channel u8s8, MinMax, SmoothQuant 0.5, FFN outputs fp32"
SMOOTH_ALPHA = 0.5
WEIGHT_ONLY = "weight-only 8-bit, blocks of 32, activations per row"
CALIBRATION_TEXTS = 512


@dataclass(frozen=True)
class Int8Recipe:
    """One way to make the int8 model: `name` is what the manifest records; `make(src,
    dst, batches)` writes it (`batches()`: the calibration batches, for recipes that fix
    activation scales). Every recipe here gives a query the same answer in any batch."""

    name: str
    make: Callable[[Path, Path, Callable[[], Iterable[dict]]], Path]
    slug: str  # the file of a kept alternate: onnx/model.int8.<slug>.onnx


# The candidates an export builds and scores on val, in order of preference on a tie: the
# static recipe is faster at a full batch (weight-only int8 is not, even with int8
# dot-product instructions); SmoothQuant's scales keep the averaged weights' figures,
# which plain fixed scales did not (docs/results.md#backends).
INT8_RECIPES = (
    Int8Recipe(
        SMOOTHED,
        lambda src, dst, batches: quantize_int8(src, dst, batches(), smooth_alpha=SMOOTH_ALPHA),
        "static-smoothquant",
    ),
    Int8Recipe(
        WEIGHT_ONLY,
        lambda src, dst, batches: quantize_weight_only(src, dst, block_size=32),
        "weight-only-b32",
    ),
)


def calibration_texts(texts: list[str], n: int = CALIBRATION_TEXTS, seed: int = 0) -> list[str]:
    """The training texts that fix int8's activation scales: a seeded sample."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(texts), min(n, len(texts)), replace=False)
    return [texts[i] for i in picks]


def keeps_fp32(node_name: str) -> bool:
    """The MatMuls left in fp32: each feed-forward block's second matrix, whose inputs
    (after GELU) carry the outliers that one fixed scale handles worst. Quantised too, they
    cost about a point of in-scope accuracy (docs/results.md#backends)."""
    return "/output/dense/" in node_name and "/attention/" not in node_name


@contextlib.contextmanager
def quiet_quantiser():
    """ONNX Runtime's quantisers log every tensor or MatMul at INFO on the root logger: keep
    the training log readable while they run."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_weight_only(
    src: str | Path,
    dst: str | Path,
    *,
    bits: int = 8,
    block_size: int = 128,
    accuracy_level: int = 4,
) -> Path:
    """Weight-only int8 (or int4) MatMuls (MatMulNBits): weights in blocks with their own
    scales; at accuracy level 4 ONNX Runtime quantises each row of activations on its own at
    run time and runs an int8 GEMM, so a row's result does not depend on its batch. The
    generator's decoder step uses the defaults (training.generator_export); benchmarks.int8
    and benchmarks.generator try others."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    settings = dict(
        block_size=block_size, is_symmetric=True, accuracy_level=accuracy_level, bits=bits
    )
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(src)), algo_config=DefaultWeightOnlyQuantConfig(**settings), **settings
    )
    with quiet_quantiser():
        quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    return Path(dst)


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    batches: Iterable[dict[str, np.ndarray]],
    smooth_alpha: float | None = None,
) -> Path:
    """Static int8: activation scales fixed once from `batches` (tokenised calibration
    texts, `input_ids` and `attention_mask`), one weight scale per output channel, uint8
    activations and int8 weights (the u8s8 kernels x86 without VNNI has), QLinearMatMul
    operators, the feed-forward outputs kept in fp32; `smooth_alpha`: SmoothQuant first.

    Static, not dynamic: dynamic quantisation computes each activation's scale over the
    whole batch, so a query's answer changed with the queries batched with it (0.5 % of
    CLINC150's decisions); with fixed scales it is the same in any batch. The variants
    tried, with their figures: docs/results.md#backends (python -m benchmarks.int8)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    return quantize_static_int8(
        src,
        dst,
        batches,
        quant_format=QuantFormat.QOperator,
        activation_type=QuantType.QUInt8,
        method=CalibrationMethod.MinMax,
        keep=keeps_fp32,
        smooth_alpha=smooth_alpha,
    )


def smooth_activations(model, batches: list[dict[str, np.ndarray]], alpha: float, keep=None) -> int:
    """SmoothQuant (Xiao et al., 2023) on an ONNX model, in place: for each activation that
    feeds MatMuls with constant weights, a per-channel scale s = max|X|^alpha /
    max|W|^(1 - alpha) (channel maxima over the calibration `batches`) divides the
    activation (an inserted Mul) and multiplies the weights' matching rows, so the product
    is unchanged and one fixed int8 scale per tensor fits the activation's outlier channels
    better. Returns how many activations were smoothed. Hand-written because ONNX Runtime's
    own `SmoothQuant` option needs neural-compressor 2.x, which pins numpy below 2; the
    scales are not folded into the producer, since in post-LayerNorm BERT that output also
    feeds the residual."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        if (
            node.op_type == "MatMul"
            and node.input[1] in weights
            and node.input[0] not in weights
            and not (keep is not None and keep(node.name))
        ):
            consumers.setdefault(node.input[0], []).append(node)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in consumers:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = list(consumers)
    feeds = {i.name for i in session.get_inputs()}
    peaks: dict[str, np.ndarray] = {}
    for batch in batches:
        outputs = session.run(names, {k: v for k, v in batch.items() if k in feeds})
        for name, value in zip(names, outputs, strict=True):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            peaks[name] = peak if name not in peaks else np.maximum(peaks[name], peak)
    for name, nodes in consumers.items():
        matrices = [numpy_helper.to_array(weights[n.input[1]]) for n in nodes]
        weight_peak = np.max([np.abs(w).max(axis=1) for w in matrices], axis=0)
        scale = peaks[name] ** alpha / np.maximum(weight_peak, 1e-8) ** (1 - alpha)
        scale = np.clip(scale, 1e-5, None).astype(np.float32)
        for node, matrix in zip(nodes, matrices, strict=True):
            weights[node.input[1]].CopyFrom(
                numpy_helper.from_array(matrix * scale[:, None], node.input[1])
            )
        smoothed = f"{name}_smoothed"
        graph.initializer.append(numpy_helper.from_array(1.0 / scale, f"{name}_smooth_scale"))
        first = min(list(graph.node).index(n) for n in nodes)
        graph.node.insert(
            first,
            helper.make_node(
                "Mul", [name, f"{name}_smooth_scale"], [smoothed], name=f"{name}_smooth"
            ),
        )
        for node in nodes:
            node.input[0] = smoothed
    return len(consumers)


def quantize_static_int8(
    src: str | Path,
    dst: str | Path,
    batches: Iterable[dict[str, np.ndarray]],
    *,
    quant_format,
    activation_type,
    method,
    keep=None,
    smooth_alpha: float | None = None,
    extra_options: dict | None = None,
) -> Path:
    """ONNX Runtime's static quantiser on the MatMuls, per-channel int8 weights, after its
    shape-inference pre-processing; `keep(node_name)` names the MatMuls left in fp32;
    `smooth_alpha`: SmoothQuant first (`smooth_activations`). The export's recipes are in
    INT8_RECIPES; benchmarks.int8 tries others through this."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = list(batches)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {k: b[k] for k in ("input_ids", "attention_mask")}

    # The quantiser advises shape-inference pre-processing (done here).
    with quiet_quantiser(), tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        if smooth_alpha is not None:
            model = onnx.load(str(pre))
            smooth_activations(model, batches, smooth_alpha, keep)
            onnx.save(model, str(pre))
        kept = [
            n.name
            for n in onnx.load(str(pre)).graph.node
            if n.op_type == "MatMul" and keep is not None and keep(n.name)
        ]
        quantize_static(
            str(pre),
            str(dst),
            Reader(),
            quant_format=quant_format,
            per_channel=True,
            activation_type=activation_type,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=kept,
            extra_options=extra_options or {},
        )
    return Path(dst)


def calibration_batches(
    tokenize, texts: list[str], max_length: int, batch_size: int = 16
) -> Iterator[dict[str, np.ndarray]]:
    """`tokenize(texts) -> {"input_ids", "attention_mask"}` as numpy, padded here to
    `max_length` (the width a served batch can reach), `batch_size` texts at a time."""
    for i in range(0, len(texts), batch_size):
        b = tokenize(texts[i : i + batch_size])
        arrays = {k: np.asarray(b[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}
        width = max(0, max_length - arrays["input_ids"].shape[1])
        yield {k: np.pad(a, ((0, 0), (0, width))) for k, a in arrays.items()}


# The figures a backend's manifest entry records from its test report.
BACKEND_FIGURES = ("inscope_accuracy", "oos_recall", "accuracy", "slot_f1")


def test_figures(report: dict) -> dict:
    """A backend's manifest entry: its test report's BACKEND_FIGURES."""
    return {k: report["test"][k] for k in BACKEND_FIGURES if k in report["test"]}


def int8_drop(fp32: dict, int8: dict) -> float:
    """int8's largest loss against fp32 over the figures the service's rule holds it to
    (in-scope accuracy, out-of-scope recall, slot F1 where there is a tagger), as fractions."""
    from services.classifier.model import INT8_RULE

    return max(fp32[k] - int8[k] for k, _, _ in INT8_RULE if k in fp32 and k in int8)


def choose_int8(artifact_dir: str | Path, data, fp32_val: dict) -> tuple[str, dict]:
    """Build each recipe of INT8_RECIPES, evaluate it as served (the artifact's score and
    threshold) on val and test, and keep the one whose larger loss against fp32's val
    figures (`fp32_val`) is smallest in the artifact's int8 path; test is recorded, never
    used to choose. The other recipes within INT8_MAX_DROP of fp32 on val stay beside it
    as alternates (`onnx/model.int8.<slug>.onnx`): which int8 kernels are fastest depends
    on the CPU, and the service's `auto` times them all where it runs. Returns (the kept
    recipe's name, each recipe's report by name, with `file` where one was written)."""
    from services.classifier.artifact import ClassifierArtifact, int8_alternate_name
    from services.classifier.backends import _onnx_tokenizer
    from services.classifier.model import INT8_MAX_DROP, within_drop
    from training.evaluate import evaluate_artifact

    art = ClassifierArtifact.load(artifact_dir)
    texts = calibration_texts(data.train.texts)
    tokenizer = _onnx_tokenizer(art)

    def batches() -> Iterator[dict]:
        return calibration_batches(tokenizer, texts, art.max_seq_length)

    target = art.onnx_path(True)
    for stale in target.parent.glob(int8_alternate_name("*")):
        stale.unlink()  # a requantised artifact: the alternates of its last export
    reports: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        built = {}
        for k, recipe in enumerate(INT8_RECIPES):
            built[recipe.name] = recipe.make(art.onnx_path(False), Path(tmp) / f"{k}.onnx", batches)
            shutil.copyfile(built[recipe.name], target)
            reports[recipe.name] = evaluate_artifact(artifact_dir, data, "onnx-int8")
            logger.info(
                "int8 %s: val in-scope %.2f %%, OOS recall %.2f %%",
                recipe.name,
                100 * reports[recipe.name]["val"]["inscope_accuracy"],
                100 * reports[recipe.name]["val"]["oos_recall"],
            )
        losses = {name: int8_drop(fp32_val, report["val"]) for name, report in reports.items()}
        chosen = min(reports, key=losses.get)
        shutil.copyfile(built[chosen], target)
        reports[chosen]["file"] = target.name
        for recipe in INT8_RECIPES:
            if recipe.name != chosen and within_drop(losses[recipe.name], INT8_MAX_DROP):
                alternate = target.parent / int8_alternate_name(recipe.slug)
                shutil.copyfile(built[recipe.name], alternate)
                reports[recipe.name]["file"] = alternate.name
    return chosen, reports


def int8_record(chosen: str, reports: dict[str, dict]) -> dict:
    """The manifest's `onnx-int8` entry: the chosen recipe's test figures (what the
    service's int8 rule reads) and every candidate's val and test figures, with the file
    (in the artifact's onnx/) of each one kept."""
    from services.classifier.model import INT8_RULE

    return {
        **test_figures(reports[chosen]),
        "quantization": chosen,
        "batch_independent": True,
        "candidates": {
            name: {
                **{
                    split: {k: report[split][k] for k, _, _ in INT8_RULE if k in report[split]}
                    for split in ("val", "test")
                },
                **({"file": report["file"]} if "file" in report else {}),
            }
            for name, report in reports.items()
        },
    }


def requantize(artifact_dir: str | Path, data_dir: str | None = None) -> dict:
    """An artifact's int8 model made again from its fp32 one (an artifact trained before
    the current recipes), chosen on val as an export chooses it, and its recorded int8
    figures measured again on the pack's test split, which is what the service's int8
    rule reads; the model's figures in bfloat16 (torch-bf16) are recorded too."""
    import json

    from services.classifier.artifact import MANIFEST, ClassifierArtifact
    from services.classifier.model import BF16
    from training.evaluate import evaluate_artifact, evaluation_data

    art = ClassifierArtifact.load(artifact_dir)
    _, data = evaluation_data(art, data_dir=data_dir)
    fp32_val = evaluate_artifact(artifact_dir, data, "onnx", splits=("val",))["val"]
    chosen, reports = choose_int8(artifact_dir, data, fp32_val)
    manifest = json.loads((Path(artifact_dir) / MANIFEST).read_text())
    manifest.setdefault("backends", {})["onnx-int8"] = int8_record(chosen, reports)
    # the model in bfloat16 (torch-bf16), which artifacts before it do not record
    manifest["backends"][BF16] = test_figures(evaluate_artifact(artifact_dir, data, BF16))
    (Path(artifact_dir) / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest["backends"]


if __name__ == "__main__":
    import argparse
    import sys

    from services.classifier.model import BF16

    parser = argparse.ArgumentParser(
        description="Make a classifier artifact's int8 model again (each recipe of "
        "INT8_RECIPES, the one that loses least on val kept, the others within the rule on "
        "val beside it) and record their test figures, and those of the model in "
        "bfloat16: "
        "python -m training.export --requantize ARTIFACT"
    )
    parser.add_argument("--requantize", required=True, metavar="ARTIFACT")
    parser.add_argument("--data-dir", default=None, help="default $CLINC150_DIR")
    args = parser.parse_args()
    backends = requantize(args.requantize, args.data_dir)
    int8 = backends["onnx-int8"]
    for name, figures in int8["candidates"].items():
        shown = {
            split: {k: round(100 * v, 2) for k, v in figures[split].items()}
            for split in ("val", "test")
        }
        mark = "kept" if name == int8["quantization"] else "alt " if "file" in figures else "    "
        sys.stdout.write(f"{mark} {name}: {shown}\n")
    for kind in ("onnx", "onnx-int8", BF16):
        figures = {
            k: round(100 * v, 2) for k, v in backends.get(kind, {}).items() if isinstance(v, float)
        }
        sys.stdout.write(f"{kind} (test): {figures}\n")
