"""int8 variants of a classifier artifact, scored as served (docs/results.md#backends):

    python -m benchmarks.int8 --artifact artifacts/classifier

For each variant of ONNX Runtime's quantiser: test in-scope accuracy and OOS recall through
the service's own decision rule, throughput at batch 32, batch-1 p50, and how many decisions
change between one query at a time and batches of 32 (dynamic quantisation scales
activations per batch; weight-only int8 scales each row on its own).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from services.classifier.artifact import ClassifierArtifact
from services.classifier.backends import _onnx_tokenizer, load_backend
from services.classifier.model import ClassifierModel
from training.evaluate import evaluate_artifact, evaluation_data
from training.export import (
    calibration_batches,
    calibration_texts,
    keeps_fp32,
    quantize_static_int8,
    quantize_weight_only,
    quiet_quantiser,
)


def _variants(fp32: Path, art: ClassifierArtifact, calib_texts: list[str]) -> dict:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
    )

    tokenizer = _onnx_tokenizer(art)

    def static(method, fmt=QuantFormat.QDQ, activations=QuantType.QInt8, keep=None, **extra):
        """`keep`: a test on MatMul node names, those left in fp32. The calibration
        batches are the export's, padded to the artifact's longest input (the histogram
        calibrators need activations of one shape across batches)."""

        def run(dst):
            quantize_static_int8(
                fp32,
                dst,
                calibration_batches(tokenizer, calib_texts, art.max_seq_length),
                quant_format=fmt,
                activation_type=activations,
                method=method,
                keep=keep,
                **extra,
            )

        return run

    # uint8 activations with int8 weights: the x86 int8 kernels without VNNI (AVX2) are
    # u8s8; QOperator: QLinearMatMul kernels instead of QDQ pairs left for fusion
    u8 = {"fmt": QuantFormat.QOperator, "activations": QuantType.QUInt8}

    def weight_only(block: int, accuracy_level: int):
        # MatMulNBits: int8 weights in blocks; at accuracy level 4 ONNX Runtime quantises
        # each row of activations on its own (per block of the inner dimension) and runs
        # an int8 GEMM, so a query's answer does not depend on what is batched with it.
        def run(dst):
            quantize_weight_only(fp32, dst, block_size=block, accuracy_level=accuracy_level)

        return run

    return {
        # the export's candidates (training.export.INT8_RECIPES), the one kept chosen on val
        "weight-only 8-bit, blocks of 32, accuracy level 4 (an export candidate)": weight_only(
            32, 4
        ),
        **{
            f"weight-only 8-bit, blocks of {block}, accuracy level {level}": weight_only(
                block, level
            )
            for block, level in ((128, 4), (32, 0))
        },
        "dynamic, per tensor": lambda dst: quantize_dynamic(
            str(fp32), str(dst), weight_type=QuantType.QInt8
        ),
        "dynamic, per channel (the export until 2026-12-03)": lambda dst: quantize_dynamic(
            str(fp32), str(dst), weight_type=QuantType.QInt8, per_channel=True
        ),
        "static QDQ, per channel, MinMax, MatMul only": static(CalibrationMethod.MinMax),
        "static QDQ, per channel, percentile 99.99": static(
            CalibrationMethod.Percentile, extra_options={"CalibPercentile": 99.99}
        ),
        "static QOperator u8s8, per channel, MinMax": static(CalibrationMethod.MinMax, **u8),
        "static QOperator u8s8, per channel, MinMax, FFN outputs fp32 (until 2026-12-07)": static(
            CalibrationMethod.MinMax, keep=keeps_fp32, **u8
        ),
        **{
            f"static QOperator u8s8, per channel, MinMax, SmoothQuant {alpha}{tail}"
            + (" (an export candidate)" if alpha == 0.5 and keep else ""): static(
                CalibrationMethod.MinMax, keep=keep, smooth_alpha=alpha, **u8
            )
            # SmoothQuant's default alpha, and one that moves more of the range to weights
            for alpha in (0.5, 0.75)
            for tail, keep in (("", None), (", FFN outputs fp32", keeps_fp32))
        },
        "static QOperator u8s8, per channel, percentile 99.999": static(
            CalibrationMethod.Percentile, extra_options={"CalibPercentile": 99.999}, **u8
        ),
        "static QOperator u8s8, per channel, percentile 99.999, FFN outputs fp32": static(
            CalibrationMethod.Percentile,
            keep=keeps_fp32,
            extra_options={"CalibPercentile": 99.999},
            **u8,
        ),
    }


def _speed(artifact: Path, kind: str, texts: list[str]) -> dict:
    be = load_backend(ClassifierArtifact.load(artifact), kind)
    for i in range(0, 256, 32):
        be.run(texts[i : i + 32])
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for i in range(0, 1024, 32):
            be.run(texts[i : i + 32])
        best = max(best, 1024 / (time.perf_counter() - t))
    single = []
    for text in texts[:200]:
        t = time.perf_counter()
        be.run([text])
        single.append(time.perf_counter() - t)
    return {"texts_per_s_b32": round(best), "p50_b1_ms": round(1000 * statistics.median(single), 2)}


def _batch_dependence(artifact: Path, kind: str, texts: list[str]) -> dict:
    model = ClassifierModel(str(artifact), kind, int8_max_drop=1.0)
    one = [model.predict_batch([(t, 1)])[0] for t in texts]
    many = [
        p
        for i in range(0, len(texts), 32)
        for p in model.predict_batch([(t, 1) for t in texts[i : i + 32]])
    ]
    diff = np.abs([a.confidence - b.confidence for a, b in zip(one, many, strict=True)])
    return {
        "batch_dependence_queries": len(texts),
        "decisions_changed_b1_vs_b32": sum(
            a.intent != b.intent for a, b in zip(one, many, strict=True)
        ),
        "max_confidence_change": round(float(diff.max()), 4),
        "mean_confidence_change": round(float(diff.mean()), 5),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", default="artifacts/classifier")
    p.add_argument("--data-dir", default=None, help="default $CLINC150_DIR")
    p.add_argument("--calibration-texts", type=int, default=512)
    p.add_argument(
        "--only",
        action="append",
        default=None,
        help="only the variants whose name has this text (repeatable)",
    )
    p.add_argument("--output", default="docs/int8.json")
    args = p.parse_args(argv)
    src = Path(args.artifact)
    art = ClassifierArtifact.load(src)
    _, data = evaluation_data(art, data_dir=args.data_dir)
    calib = calibration_texts(data.train.texts, args.calibration_texts)
    texts = data.test.texts
    rows = []

    def row(name, artifact, kind):
        # val to choose a variant by, test to report it
        r = evaluate_artifact(artifact, data, kind, splits=("val", "test"))
        out = {
            "variant": name,
            "val_inscope_accuracy": round(100 * r["val"]["inscope_accuracy"], 2),
            "val_oos_recall": round(100 * r["val"]["oos_recall"], 2),
            "inscope_accuracy": round(100 * r["test"]["inscope_accuracy"], 2),
            "oos_recall": round(100 * r["test"]["oos_recall"], 2),
            **_speed(artifact, kind, texts),
            **_batch_dependence(artifact, kind, texts[:2000]),
        }
        print(json.dumps(out), flush=True)
        rows.append(out)

    row("fp32", src, "onnx")
    with tempfile.TemporaryDirectory() as tmp:
        for name, quantise in _variants(art.onnx_path(False), art, calib).items():
            if args.only and not any(part in name for part in args.only):
                continue
            copy = Path(tmp) / "artifact"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(src, copy, ignore=shutil.ignore_patterns("eval"))
            try:
                with quiet_quantiser():  # the quantisers log every tensor at INFO
                    quantise(copy / "onnx" / "model.int8.onnx")
                row(name, copy, "onnx-int8")
            except Exception as e:  # noqa: BLE001 - a variant the quantiser cannot make
                rows.append({"variant": name, "error": repr(e)[:200]})
                print(json.dumps(rows[-1]), flush=True)
    out = Path(args.output)
    out.write_text(json.dumps({"artifact": art.version, "variants": rows}, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
