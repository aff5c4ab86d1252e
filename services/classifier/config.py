"""Classifier service settings (env prefix CLASSIFIER_)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.classifier.model import INT8_MAX_DROP
from services.common.settings import ModelServiceSettings


class ClassifierSettings(ModelServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CLASSIFIER_", extra="ignore")

    port: int = Field(8001, ge=1, le=65535)
    artifact: str = Field(..., description="classifier artifact directory")
    # "auto" (the default): ONNX int8 when the artifact's int8 model is batch-independent
    # (a query's answer does not depend on its batch), its recorded test figures, in-scope
    # accuracy, out-of-scope recall and slot F1, are within `int8_max_drop` of fp32's, and
    # (`auto_timing`) it is the fastest at a full batch on this machine of fp32 and the
    # int8 models that keep the figures (the one chosen on val and the alternates kept
    # beside it); else ONNX fp32. "onnx-int8": the int8 model chosen on val under the same
    # figures rule, even dynamic (an older artifact). "onnx": fp32. "torch": CUDA when
    # present (docs/results.md#backends). "torch-bf16": the model in bfloat16 through torch,
    # under the same figures rule (fast only on a CPU with bfloat16 instructions, where
    # `auto` times it too when `auto_bf16` is true).
    backend: str = Field("auto", pattern="^(auto|onnx|onnx-int8|torch|torch-bf16)$")
    int8_max_drop: float = Field(INT8_MAX_DROP, ge=0.0, le=1.0)
    # auto: time the ONNX models that keep the figures at a full batch at start-up (about a
    # second each) and serve the fastest on this machine; false: the int8 model chosen on
    # val when it keeps the figures, whatever its speed, else fp32.
    auto_timing: bool = True
    # auto, on a CPU with bfloat16 instructions: also time the model in bfloat16 through
    # torch. Off by default: on an AMX Xeon it ran twice ONNX int8's texts/s as a raw model
    # but the service no faster, with 60 % more memory and slower single requests
    # (docs/results.md#bfloat16-through-torch-2026-12-08).
    auto_bf16: bool = False
    threads: int | None = Field(
        None,
        ge=1,
        description="intra-op threads of a batch that runs alone (default: all cores); "
        "batches side by side (workers > 1) get one each",
    )
    ort_spinning: bool = Field(
        True, description="ONNX Runtime worker threads spin while they wait inside a run"
    )
    ort_spin_between_runs: bool = Field(
        True,
        description="...and keep spinning after a run returns, waiting for the next one "
        "(false: they stop when a run returns, freeing the cores between requests)",
    )
    # Batches run at once on the ONNX backends, a thread each, one intra-op thread each
    # (services/common/batcher.py); a batch that runs alone gets `threads`. Default: one
    # per core. torch: always 1.
    workers: int | None = Field(None, ge=1, le=64)
    max_batch_size: int = Field(32, ge=1, le=1024)
    max_wait_ms: float = Field(0.0, ge=0.0, le=1000.0)
    max_queue: int = Field(512, ge=1)
    max_texts: int = Field(64, ge=1, description="texts per request")
    max_text_chars: int = Field(1000, ge=1)
    max_top_k: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _queue_fits_a_request(self):
        if self.max_queue < self.max_texts:
            raise ValueError("max_queue must be >= max_texts, or no full request could fit")
        return self
