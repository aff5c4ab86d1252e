"""Generator service settings (env prefix GENERATOR_)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import ModelServiceSettings


class GeneratorSettings(ModelServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GENERATOR_", extra="ignore")

    port: int = Field(8002, ge=1, le=65535)
    artifact: str = Field(..., description="generator artifact directory")
    device: str | None = Field(None, description="'cpu' or 'cuda' (default: CUDA when present)")
    threads: int | None = Field(
        None,
        ge=1,
        description="intra-op threads (default: torch all cores; ONNX one per worker, or all "
        "but one with a single worker, leaving that one to the decoding loop and HTTP)",
    )
    # Batches decoded at once on the ONNX backends, a thread each; a burst is split evenly
    # among the idle ones (services/common/batcher.py). Default: one per core. torch and
    # continuous batching: always 1.
    workers: int | None = Field(None, ge=1, le=64)
    # "auto": the artifact's ONNX decoder (encoder once, one cached step per token) where it
    # has one and the settings allow it (greedy, no torch int8, CPU), its int8 graphs when
    # their validation figures hold (services/generator/model.py), else torch generate.
    backend: str = Field("auto", pattern="^(auto|onnx|onnx-int8|torch)$")
    # Decoding: greedy (1) or beam search; None keeps the artifact's setting.
    num_beams: int | None = Field(None, ge=1, le=8)
    # "int8": dynamic int8 Linear layers (CPU); see docs/results.md for its cost in quality.
    quantize: str = Field("none", pattern="^(none|int8)$")
    # Narrow a bert2bert decoder to the templates' tokens (the artifact lists them): the
    # same replies, ~1.5x faster decoding on CPU. Off: the full vocabulary.
    compact_vocabulary: bool = True
    default_max_new_tokens: int = Field(48, ge=1)
    max_new_tokens_limit: int = Field(128, ge=1, le=512)
    # Continuous batching on the ONNX decoder (requests join and leave the running batch
    # between steps, services/generator/scheduler.py). Off by default: on two CPU cores it
    # answered fewer requests than whole batches (docs/results.md); torch: whole batches.
    continuous_batching: bool = False
    # Batching: generation is ~100x costlier per item than classifying, so smaller batches
    # and a short queue keep the wait for a slot bounded. MAX_WAIT_MS: whole batches only.
    max_batch_size: int = Field(16, ge=1, le=256)
    max_wait_ms: float = Field(20.0, ge=0.0, le=1000.0)
    # ...but only while requests keep coming: a gap this long ends the wait. Under load the
    # requests of one batch come back together and form the next whole; a lone request
    # waits this gap, not max_wait (docs/results.md measures both).
    max_gap_ms: float = Field(3.0, ge=0.0, le=1000.0)  # 0: off, the whole max_wait
    max_queue: int = Field(128, ge=1)
    # Per-request deadline: a request not answered in time gets 504, never a hang. A client
    # may ask for less with `timeout_ms`, never for more.
    request_timeout_s: float = Field(10.0, gt=0, le=300)
    max_text_chars: int = Field(1000, ge=1)
    max_slots: int = Field(16, ge=0)
    max_value_chars: int = Field(200, ge=1)

    @model_validator(mode="after")
    def _defaults_within_limits(self):
        if self.default_max_new_tokens > self.max_new_tokens_limit:
            raise ValueError("default_max_new_tokens must be <= max_new_tokens_limit")
        return self
