"""The served classifier: artifact + backend + decision rule. No FastAPI in here."""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from services.classifier.artifact import ClassifierArtifact, Int8Model
from services.classifier.backends import Backend, OnnxBackend, load_backend
from services.classifier.tagging import bio_tags, decode, snap_to_words
from services.common.batcher import usable_cores
from services.common.cpu import native_bf16_cpu

logger = logging.getLogger(__name__)


@dataclass
class Entity:
    """A slot span the tagger found, in the manner of Rasa's parse output."""

    entity: str  # the slot
    value: str  # normalised by the slot's type
    text: str  # as said: the request's text[start:end]
    start: int  # character offsets into the text as sent, end exclusive
    end: int
    confidence: float


@dataclass
class Prediction:
    intent: str
    confidence: float
    oos: bool
    oos_score: float
    top_k: list[tuple[str, float]]
    borderline: bool = False
    entities: list[Entity] = field(default_factory=list)


# What int8 (and bfloat16) must keep within `int8_max_drop` of fp32 (recorded at training
# time on test):
# (manifest key, what to call it, needed when fp32 records it).
INT8_RULE = (
    ("inscope_accuracy", "in-scope accuracy", True),
    ("oos_recall", "out-of-scope recall", False),
    ("slot_f1", "slot F1", False),
)
# The default `int8_max_drop` (CLASSIFIER_INT8_MAX_DROP), as a fraction: 0.3 points.
INT8_MAX_DROP = 0.003
# Differences of recorded fractions carry float rounding (0.863 - 0.860 is a hair above
# 0.003): a loss of exactly the limit is within it.
_ROUNDING = 1e-9
# The artifact's model in bfloat16 through torch: the manifest's `backends` entry and the
# backend's name.
BF16 = "torch-bf16"


def within_drop(loss: float, max_drop: float) -> bool:
    """A loss (fp32's figure minus int8's, as a fraction) within the limit."""
    return loss <= max_drop + _ROUNDING


def int8_rule_failure(fp32: dict, int8: dict, max_drop: float, what: str = "int8") -> str | None:
    """Why recorded int8 figures (or another reduced precision's, named by `what`) fail
    INT8_RULE against fp32's, or None when they pass."""
    for key, name, required in INT8_RULE:
        if fp32.get(key) is None:
            if required:
                return f"the artifact records no fp32 {name}"
            continue
        if int8.get(key) is None:
            return f"the artifact records no {what} {name}"
        if not within_drop(fp32[key] - int8[key], max_drop):
            return (
                f"{what} loses {100 * (fp32[key] - int8[key]):.2f} points of {name} "
                f"(limit {100 * max_drop:.2f})"
            )
    return None


def bf16_rule_failure(artifact: ClassifierArtifact, max_drop: float) -> str | None:
    """Why the artifact's model in bfloat16 may not serve (its recorded test figures against
    fp32's, the int8 rule), or None."""
    recorded = artifact.manifest.get("backends", {})
    if BF16 not in recorded:
        return (
            "the artifact records no bfloat16 figures (trained before torch-bf16; python -m "
            "training.export --requantize ARTIFACT records them)"
        )
    # fp32 through ONNX, or through torch for an artifact trained without an ONNX export
    fp32 = recorded.get("onnx") or recorded.get("torch", {})
    return int8_rule_failure(fp32, recorded[BF16], max_drop, "bfloat16")


def batch_independent_int8(artifact: ClassifierArtifact) -> bool:
    """The artifact's int8 model gives a query the same answer in any batch (static
    activation scales, or weight-only int8 that quantises each row on its own). Older
    artifacts' dynamic int8 models do not (python -m training.export --requantize ARTIFACT
    makes a new one)."""
    int8 = artifact.manifest.get("backends", {}).get("onnx-int8", {})
    # artifacts before the choice of recipes recorded only the static one, by its name
    named_static = str(int8.get("quantization", "")).startswith("static")
    return bool(int8.get("batch_independent", named_static))


def choose_backend(artifact: ClassifierArtifact, wanted: str, int8_max_drop: float) -> str:
    """int8 only when its recorded test figures are within `int8_max_drop` of fp32's.
    `auto` (the default): int8 when it is also batch-independent, else ONNX fp32."""
    if wanted == "auto":
        if not artifact.onnx_path(False).is_file():
            return "torch"  # trained with --export_onnx false
        if not artifact.onnx_path(True).is_file():
            return "onnx"
        if not batch_independent_int8(artifact):
            logger.info(
                "serving ONNX fp32: this artifact's int8 model is dynamic (answers depend on "
                "the batch); python -m training.export --requantize ARTIFACT makes a static one"
            )
            return "onnx"
        wanted = "onnx-int8"
    if wanted == BF16:
        failure = bf16_rule_failure(artifact, int8_max_drop)
        if failure:
            fp32 = "onnx" if artifact.onnx_path(False).is_file() else "torch"
            logger.warning("%s; serving %s fp32", failure, fp32)
            return fp32
        return BF16
    if wanted != "onnx-int8":
        return wanted
    recorded = artifact.manifest.get("backends", {})
    failure = int8_rule_failure(
        recorded.get("onnx", {}), recorded.get("onnx-int8", {}), int8_max_drop
    )
    if failure:
        logger.warning(
            "%s; serving fp32 (python -m training.export --requantize ARTIFACT may fix an "
            "older artifact)",
            failure,
        )
        return "onnx"
    return "onnx-int8"


def usable_int8_alternates(artifact: ClassifierArtifact, int8_max_drop: float) -> list[Int8Model]:
    """The int8 models kept beside the chosen one whose recorded test figures pass the
    same rule (an export keeps those within it on val)."""
    fp32 = artifact.manifest.get("backends", {}).get("onnx", {})
    return [
        alt
        for alt in artifact.int8_alternates()
        if int8_rule_failure(fp32, alt.figures.get("test", {}), int8_max_drop) is None
    ]


TIMING_TEXT = "please tell me what the balance of my checking account is right now"


def time_backends(
    backends: list[Backend], batch: int, rounds: int = 3, side_by_side: dict[str, int] | None = None
) -> dict[str, float]:
    """Texts per second of each backend at a full batch of a typical query, the best of
    `rounds` interleaved rounds (after one warm-up each): what decides the throughput of a
    loaded service, measured on the machine that serves. int8 kernels that keep the figures
    are not faster everywhere (weight-only int8 is slower than fp32 at batch 32 on an
    AVX-512 VNNI Xeon, faster at batch 1; docs/results.md#backends). `side_by_side`: the
    backends that serve that many batches at once (ONNX sessions of one thread, one per
    worker) run that many at once here too, so that they are compared with a backend that
    runs one batch on every core (torch) as the service would run them."""
    texts = [TIMING_TEXT] * batch
    side_by_side = side_by_side or {}
    best = {b.name: 0.0 for b in backends}
    with ThreadPoolExecutor(max(side_by_side.values(), default=1)) as pool:
        for b in backends:
            b.run(texts)
        for _ in range(rounds):
            for b in backends:
                copies = side_by_side.get(b.name, 1)
                started = time.perf_counter()
                if copies > 1:
                    list(pool.map(b.run, [texts] * copies))
                else:
                    b.run(texts)
                rate = copies * batch / (time.perf_counter() - started)
                best[b.name] = max(best[b.name], rate)
    return best


def bf16_left_out(artifact: ClassifierArtifact, int8_max_drop: float) -> str | None:
    """Why `auto` leaves torch-bf16 out of its timing on this machine, or None when it
    times it: only where the CPU has bfloat16 instructions (elsewhere bfloat16 is emulated
    and slower than fp32), torch is installed (the Lambda image has none), and the
    recorded bfloat16 figures keep fp32's."""
    if not native_bf16_cpu():
        return "the CPU has no bfloat16 instructions"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    return bf16_rule_failure(artifact, int8_max_drop)


class ClassifierModel:
    def __init__(
        self,
        artifact_dir: str,
        backend: str = "auto",
        int8_max_drop: float = INT8_MAX_DROP,
        threads: int | None = None,
        ort_spinning: bool = True,
        workers: int | None = None,
        timing_batch: int | None = None,
        ort_spin_between_runs: bool = True,
        auto_bf16: bool = False,
    ):
        """`auto_bf16`: `auto` also times the model in bfloat16 through torch where the CPU
        has bfloat16 instructions (it then imports torch, whichever backend wins). Off by
        default: twice ONNX int8's texts/s in the raw model did not make the service
        faster (docs/results.md#bfloat16-through-torch-2026-12-08)."""
        self.artifact = ClassifierArtifact.load(artifact_dir)
        self.scorer = self.artifact.scorer()
        self.labels = self.artifact.labels
        kind = choose_backend(self.artifact, backend, int8_max_drop)
        # Batches run side by side on ONNX sessions only (torch's thread pool is per calling
        # thread), by default one per core, on one intra-op thread each; a batch that runs
        # alone gets `threads` (`solo` below).
        self.workers = (workers or usable_cores()) if kind.startswith("onnx") else 1
        solo_threads = threads
        if self.workers > 1:
            threads = 1
        extra = (
            {"spinning": ort_spinning, "spin_between_runs": ort_spin_between_runs}
            if kind.startswith("onnx")
            else {}
        )
        self.backend: Backend = load_backend(self.artifact, kind, threads=threads, **extra)
        self.timing: dict | None = None
        if backend == "auto" and kind.startswith("onnx") and timing_batch:
            self.backend = self._fastest(
                kind, int8_max_drop, timing_batch, threads, extra, auto_bf16, solo_threads
            )
        if not self.backend.name.startswith("onnx"):
            self.workers = 1  # torch: one batch at a time, on every core
        # Under load, batches run side by side on one thread each: more texts per second
        # than one batch on every core. A lone batch (one client) on one thread would wait
        # longer than it must, so it runs on a second session with `threads` threads, by
        # default ONNX Runtime's (one per physical core, placed by it), on the same model.
        self.solo: Backend | None = None
        if self.workers > 1:
            self.solo = OnnxBackend(
                self.artifact,
                path=self.backend.path,
                name=self.backend.name,
                threads=solo_threads,
                **extra,
            )
        self._running = 0
        self._running_lock = threading.Lock()
        self.version = self.artifact.version
        self.slots = self.artifact.slots
        self.tags = bio_tags(self.slots)
        if self.slots:
            self.slot_type, self.extractor = self.artifact.slot_types()

    def _fastest(
        self,
        kind: str,
        int8_max_drop: float,
        batch: int,
        threads: int | None,
        extra: dict,
        auto_bf16: bool,
        bf16_threads: int | None,
    ) -> Backend:
        """`auto`'s start-up timing: the models that keep the figures (ONNX fp32, the int8
        model chosen on val when it passes the rule, the int8 alternates that pass it, and
        where the CPU has bfloat16 instructions the model in bfloat16 through torch) at a
        full batch on this machine, each run as the service would run it; the fastest
        serves. Which kernels are fastest depends on the CPU (docs/results.md#backends)."""
        options = [self.backend]
        if kind == "onnx-int8":
            options.append(load_backend(self.artifact, "onnx", threads=threads, **extra))
        for alt in usable_int8_alternates(self.artifact, int8_max_drop):
            options.append(
                OnnxBackend(
                    self.artifact, path=alt.path, name=alt.backend_name, threads=threads, **extra
                )
            )
        if auto_bf16:
            left_out = bf16_left_out(self.artifact, int8_max_drop)
            if left_out is None:
                options.append(load_backend(self.artifact, BF16, threads=bf16_threads))
            else:
                logger.info("auto leaves %s out: %s", BF16, left_out)
        if len(options) == 1:
            return self.backend
        side_by_side = {b.name: self.workers for b in options if b.name.startswith("onnx")}
        self.timing = time_backends(options, batch, side_by_side=side_by_side)
        fastest = max(options, key=lambda b: self.timing[b.name])
        logger.info(
            "serving %s: the fastest at batches of %d on this machine (texts/s: %s; "
            "CLASSIFIER_AUTO_TIMING=false serves %s)",
            fastest.name,
            batch,
            ", ".join(f"{name} {rate:.0f}" for name, rate in self.timing.items()),
            self.backend.name,
        )
        return fastest

    def warmup(self, rounds: int = 3) -> float:
        started = time.perf_counter()
        for n in (1, 8, 32)[:rounds]:
            texts = [f"warm up query number {i}" for i in range(n)]
            self.predict_batch([(t, 1) for t in texts])
            if self.solo is not None:  # predict_batch, alone, ran the solo session
                self.backend.run(texts)
        return time.perf_counter() - started

    def _run(self, texts: list[str]):
        """The batch on the solo session when no other batch is running, else on the
        workers' shared one-thread session."""
        if self.solo is None:
            return self.backend.run(texts)
        with self._running_lock:
            self._running += 1
            alone = self._running == 1
        try:
            return (self.solo if alone else self.backend).run(texts)
        finally:
            with self._running_lock:
                self._running -= 1

    def predict_batch(self, items: list[tuple]) -> list[Prediction]:
        """`items`: (text, top_k) or (text, top_k, now) tuples, run as one batch; one
        Prediction each. `now` (the request's clock) anchors relative dates in entities.
        Thread-safe: the batcher's workers call it at once."""
        texts = [item[0] for item in items]
        max_k = max(item[1] for item in items)
        run = self._run(texts)
        p = self.scorer.predict(run.logits, run.features, top_k=max_k)
        out = []
        for i, (text, k, *rest) in enumerate(items):
            top = [
                (self.labels[int(j)], float(s))
                for j, s in zip(p["top_k"][i][:k], p["top_k_probs"][i][:k], strict=True)
            ]
            oos = bool(p["oos"][i])
            out.append(
                Prediction(
                    intent="oos" if oos else self.labels[int(p["argmax"][i])],
                    confidence=float(p["confidence"][i]),
                    oos=oos,
                    oos_score=float(p["score"][i]),
                    top_k=top,
                    borderline=bool(p["borderline"][i]),
                    entities=self._entities(text, run, i, rest[0] if rest else None),
                )
            )
        return out

    def _entities(self, text: str, run, i: int, now: datetime | None) -> list[Entity]:
        if run.tag_logits is None:
            return []
        out = []
        for span in snap_to_words(text, decode(run.tag_logits[i], run.words[i], self.tags)):
            said = text[span.start : span.end]
            value = self.extractor.normalise(said, self.slot_type[span.slot], now)
            out.append(Entity(span.slot, value, said, span.start, span.end, span.confidence))
        return out

    def int8_recipe(self) -> str | None:
        """The quantisation recipe of the int8 model served (None: not int8)."""
        if not self.backend.name.startswith("onnx-int8"):
            return None
        record = self.artifact.manifest.get("backends", {}).get("onnx-int8", {})
        for recipe, figures in (record.get("candidates") or {}).items():
            if figures.get("file") == self.backend.path.name:
                return recipe
        return record.get("quantization")

    def info(self) -> dict:
        m = self.artifact.manifest
        return {
            "version": self.version,
            "backend": self.backend.name,
            # auto's start-up timing of the models that keep the figures (texts/s at full
            # batches, run as served: ONNX workers side by side), if run
            "backend_timing": self.timing,
            "int8_recipe": self.int8_recipe(),
            "base_model": m.get("base_model"),
            "preset": m.get("preset"),
            "created_at": m.get("created_at"),
            "git_commit": m.get("git_commit"),
            "labels": len(self.labels),
            "workers": self.workers,
            "slots": list(self.slots),
            # chosen on val at training time: the slots whose rules only read answers
            "slots_left_to_tagger": list((m.get("slot_policy") or {}).get("left_to_tagger") or []),
            "slot_annotations": self.artifact.slot_annotations,
            "label_names": list(self.labels),
            "pack": m.get("pack"),
            "oos_score": self.scorer.score,
            "oos_threshold": self.scorer.threshold,
            "confirm_threshold": self.scorer.confirm_threshold,
            "temperature": self.scorer.temperature,
            "metrics": {
                k: m.get("metrics", {}).get(k)
                for k in ("inscope_accuracy", "oos_recall", "oos_auroc", "ece")
            },
        }
