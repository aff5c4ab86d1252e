"""A classifier artifact on disk: its layout, its manifest, and loading its decision rule.

Layout (written by `training.classifier`, read by the service and `training.evaluate`):

    OUT/
      manifest.json            kind, base_model, preset, labels, oos_threshold, temperature, ...
      model/                   merged encoder (HF format) + tokenizer + head.safetensors
      adapter/                 LoRA adapter + head (only when trained with LoRA)
      onnx/model.onnx          fp32 export: input_ids, attention_mask -> logits, features
      onnx/model.int8.onnx     int8 model of the same graph (the recipe chosen on val)
      onnx/model.int8.*.onnx   other int8 recipes within the rule on val (the service's
                               `auto` times them all)
      ood_stats.npz            feature statistics for distance-based out-of-scope scores
      slots.json               a joint model: each tagged slot's type, and those types
      eval/                    test report (JSON), per-split metrics, plots
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.classifier.scoring import FeatureStats, Scorer
from services.common.files import read_manifest

MANIFEST = "manifest.json"
MODEL_DIR = "model"
ADAPTER_DIR = "adapter"
ONNX_DIR = "onnx"
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
OOD_STATS = "ood_stats.npz"
SLOTS = "slots.json"
EVAL_DIR = "eval"


def int8_alternate_name(slug: str) -> str:
    """The file, in onnx/, of an int8 recipe kept beside the chosen one."""
    return f"model.int8.{slug}.onnx"


@dataclass(frozen=True)
class Int8Model:
    """One int8 model of an artifact: its recipe, file and recorded figures (val, test)."""

    recipe: str
    path: Path
    figures: dict

    @property
    def backend_name(self) -> str:
        """Its name among the service's backends (`backend_timing`): onnx-int8:<slug>."""
        return "onnx-int8:" + self.path.name.removeprefix("model.int8.").removesuffix(".onnx")


class ArtifactError(ValueError):
    """The directory is not a usable classifier artifact."""


@dataclass
class ClassifierArtifact:
    path: Path
    manifest: dict

    @classmethod
    def load(cls, path: str | Path) -> ClassifierArtifact:
        path = Path(path)
        mpath = path / MANIFEST
        manifest = read_manifest(path, "classifier", ArtifactError)
        for key in ("labels", "oos_threshold", "temperature", "ood"):
            if key not in manifest:
                raise ArtifactError(f"{mpath}: missing {key!r}")
        if "oos" not in manifest["labels"]:
            raise ArtifactError(f"{mpath}: labels lack 'oos'")
        return cls(path, manifest)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def version(self) -> str:
        return str(self.manifest.get("version") or self.manifest.get("created_at", "unknown"))

    @property
    def max_seq_length(self) -> int:
        return int(self.manifest.get("max_seq_length", 64))

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    def onnx_path(self, quantized: bool = False) -> Path:
        return self.path / ONNX_DIR / (ONNX_INT8 if quantized else ONNX_FP32)

    def int8_alternates(self) -> list[Int8Model]:
        """The int8 models kept beside the chosen one (artifacts before alternates: none);
        `figures` holds each one's recorded val and test figures."""
        record = (self.manifest.get("backends") or {}).get("onnx-int8") or {}
        out = []
        for recipe, figures in (record.get("candidates") or {}).items():
            if recipe == record.get("quantization") or not figures.get("file"):
                continue
            path = self.path / ONNX_DIR / figures["file"]
            if path.is_file():
                out.append(Int8Model(recipe, path, figures))
        return out

    @property
    def slots(self) -> list[str]:
        """The slots its tagger finds (none: an intent-only model)."""
        return list((self.manifest.get("head") or {}).get("slots") or [])

    @property
    def slot_annotations(self) -> str | None:
        """What its tagger learned from: "markup" (annotated examples) or "silver" (the
        rules' own annotations); None without a tagger."""
        if not self.slots:
            return None
        args = (self.manifest.get("training") or {}).get("args") or {}
        return "silver" if args.get("slot_tagger") == "silver" else "markup"

    def slot_types(self):
        """(slot -> type name, a `SlotExtractor` over those types) for normalising spans."""
        import json

        from parlance.pack.loader import extractor_of
        from parlance.pack.models import SlotsFile

        path = self.path / SLOTS
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            types = SlotsFile.model_validate({"types": doc["types"]})
            by_slot = {str(k): str(v) for k, v in doc["slots"].items()}
        except FileNotFoundError:
            raise ArtifactError(f"{path}: missing (the model tags slots)") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ArtifactError(f"{path}: not a slots file ({e})") from None
        missing = [s for s in self.slots if s not in by_slot]
        if missing:
            raise ArtifactError(f"{path}: no type for slot(s) {missing}")
        return by_slot, extractor_of(types)

    def feature_stats(self) -> FeatureStats | None:
        p = self.path / OOD_STATS
        if not p.is_file():
            return None
        with np.load(p) as arrays:
            return FeatureStats.from_arrays(dict(arrays))

    def scorer(self) -> Scorer:
        ood = dict(self.manifest["ood"])
        # The top-level fields are the contract's; they win over the nested copy.
        ood["threshold"] = self.manifest["oos_threshold"]
        ood["temperature"] = self.manifest["temperature"]
        needs_stats = ood["score"] in ("maha", "knn", "msp_maha")
        stats = self.feature_stats() if needs_stats else None
        if needs_stats and stats is None:
            raise ArtifactError(f"{self.path}: score {ood['score']!r} needs {OOD_STATS}")
        return Scorer.from_manifest(self.labels, ood, stats)
