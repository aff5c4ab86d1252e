"""Learned slot filling on a pack with annotated test examples (SNIPS 2017's `validate_*`):
intent accuracy, slot F1 of the tagger, of the rules and of the two combined as the gateway
combines them, sentence accuracy, per-slot F1, and the slot head's cost in latency.

    python -m benchmarks.slots --artifact runs/snips-cpu --pack PACK [--output FILE.json]

Everything goes through the service's own `ClassifierModel` (tokenisation, decision rule,
span decoding and normalisation), so the figures are those of the served model. The
intent-only comparison is the same artifact exported without its tagger, timed in the
same run, alternating with the joint graph.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parlance.pack import load_pack
from parlance.slots import Slot
from services.classifier.artifact import ClassifierArtifact
from services.classifier.model import ClassifierModel
from training.evaluate import training_data
from training.slot_tagging import rule_spans, slot_report, slots_read_for


def predict(model: ClassifierModel, texts: list[str], batch: int = 32) -> list:
    out = []
    for i in range(0, len(texts), batch):
        out += model.predict_batch([(t, 1) for t in texts[i : i + batch]])
    return out


def combined_spans(
    pack, text: str, slots: list[str], learned: list, tagged: frozenset[str] = frozenset()
) -> list:
    """The gateway's combination (SlotExtractor.combine, as Pack.extract_slots calls it):
    the tagger leads on the list slots in `tagged`, the rules lead on the others and the
    tagger adds what they miss; rule types take the rule's reading of a learned span."""
    x = pack.extractor
    mine = [
        Slot(pack.slot_types.get(e.entity, ""), e.value, e.start, e.end, e.entity) for e in learned
    ]
    names = [n for n in slots if n in pack.slot_types]
    quiet, first = x.leads({n: pack.slot_types[n] for n in names}, tagged)
    rules = [
        Slot(pack.slot_types[r.slot], r.value, r.start, r.end, r.slot)
        for r in rule_spans(pack, text, names)
    ]
    out = x.combine(rules, mine, quiet, first, text)
    named, spans = set(), []
    for s in out:  # one value per slot, as the gateway keeps it
        if s.name and s.name not in named:
            named.add(s.name)
            spans.append(Found(s.name, s.start, s.end))
    return spans


@dataclass(frozen=True)
class Found:
    slot: str
    start: int
    end: int


def quality(model: ClassifierModel, pack, texts, intents, gold) -> dict:
    preds = predict(model, texts)
    served = np.array([p.intent == i for p, i in zip(preds, intents, strict=True)])
    argmax = np.array([p.top_k[0][0] == i for p, i in zip(preds, intents, strict=True)])
    learned = [[Found(e.entity, e.start, e.end) for e in p.entities] for p in preds]
    top = [p.top_k[0][0] for p in preds]
    declared = [slots_read_for(pack, t) for t in top]
    rules = [rule_spans(pack, t, s) for t, s in zip(texts, declared, strict=True)]
    tagged = frozenset(model.info()["slots_left_to_tagger"])
    both = [
        combined_spans(pack, t, s, p.entities, tagged)
        for t, s, p in zip(texts, declared, preds, strict=True)
    ]
    rules_lead = [
        combined_spans(pack, t, s, p.entities)
        for t, s, p in zip(texts, declared, preds, strict=True)
    ]
    out = {
        "intent_accuracy": float(served.mean()),
        "intent_accuracy_argmax": float(argmax.mean()),
    }
    variants = (
        ("tagger", learned),
        ("rules", rules),
        ("combined", both),
        ("rules_lead_tagger_adds", rules_lead),
    )
    for name, spans in variants:
        rep = slot_report(texts, gold, spans, served)
        out[name] = {k: v for k, v in rep.items() if k != "per_slot"}
        # as the literature counts it: the intent by argmax over the pack's intents
        closed = slot_report(texts, gold, spans, argmax)["sentence_accuracy"]
        out[name]["sentence_accuracy_argmax"] = closed
        if name == "tagger":
            out["per_slot"] = rep["per_slot"]
    return out


def intent_only_copy(artifact: Path, into: Path) -> Path:
    """The artifact without its tagger: the same weights, an ONNX graph with two outputs."""
    from services.classifier.modeling import IntentClassifier
    from training.export import export_onnx

    for item in artifact.iterdir():
        if item.name not in ("onnx", "manifest.json", "eval"):
            (into / item.name).symlink_to(item.resolve())
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["head"] = {**manifest["head"], "slots": []}
    (into / "manifest.json").write_text(json.dumps(manifest))
    model = IntentClassifier.from_pretrained(artifact / "model")
    model.tagger = None
    export_onnx(model, into / "onnx" / "model.onnx")
    return into


def speed(models: dict[str, ClassifierModel], texts: list[str], rounds: int = 3) -> dict:
    """Batch-1 p50 and batch-32 throughput of each model, interleaved over `rounds`."""
    lat: dict[str, list[float]] = {k: [] for k in models}
    thr: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        m.warmup()
    for _ in range(rounds):
        for name, m in models.items():
            for i in range(100):
                t0 = time.perf_counter()
                m.predict_batch([(texts[i % len(texts)], 1)])
                lat[name].append(time.perf_counter() - t0)
            batches = [texts[i : i + 32] for i in range(0, len(texts) - 31, 32)]
            done, t0, i = 0, time.perf_counter(), 0
            while time.perf_counter() - t0 < 2.0:
                m.predict_batch([(t, 1) for t in batches[i % len(batches)]])
                done += 32
                i += 1
            thr[name].append(done / (time.perf_counter() - t0))
    return {
        name: {
            "batch1_p50_ms": 1000 * statistics.median(lat[name]),
            "batch32_texts_per_s": statistics.median(thr[name]),
        }
        for name in models
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--pack", required=True, help="the pack the artifact was trained on")
    parser.add_argument("--backends", default="onnx,onnx-int8")
    parser.add_argument("--output", default=None, help="write the figures as JSON")
    args = parser.parse_args(argv)
    art = ClassifierArtifact.load(args.artifact)
    pack = load_pack(args.pack)
    test = training_data(art, pack).test
    if test.spans is None:
        raise SystemExit(f"{args.pack}: its test examples carry no slot annotations")
    report: dict = {
        "artifact": str(args.artifact),
        "pack": pack.identity(),
        "test_utterances": len(test),
        "training_seconds": art.manifest.get("training", {}).get("seconds"),
        "backends": {},
    }
    for kind in args.backends.split(","):
        model = ClassifierModel(args.artifact, kind, int8_max_drop=1.0)
        report["backends"][kind] = quality(model, pack, test.texts, test.intents, test.spans)
        print(
            kind,
            json.dumps(
                {k: v for k, v in report["backends"][kind].items() if k != "per_slot"}, indent=1
            ),
            flush=True,
        )
    if "place" in art.slots:  # CLINC150 with silver annotations
        model = ClassifierModel(args.artifact, "onnx")
        report["novel_places"] = novel_values(model, pack, test, "place", NOVEL_PLACES)
        print(json.dumps(report["novel_places"], indent=1), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="intent-only-"))
    try:
        models = {
            "joint": ClassifierModel(args.artifact, "onnx"),
            "intent_only": ClassifierModel(str(intent_only_copy(Path(args.artifact), tmp)), "onnx"),
        }
        report["speed_onnx_fp32"] = speed(models, test.texts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report["speed_onnx_fp32"], indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2))
    return report


# Cities and countries missing from the built-in gazetteer (parlance/resources/places.yaml),
# checked by `novel_values`: a learned extractor must find them from context alone.
NOVEL_PLACES = [
    "adelaide", "ouagadougou", "tromso", "reykjavik", "hobart", "timbuktu", "ulaanbaatar",
    "nuuk", "antananarivo", "bratislava", "kigali", "thimphu", "zanzibar", "asuncion",
    "valparaiso", "bishkek", "windhoek", "tallinn", "cusco", "luang prabang", "da nang",
    "kota kinabalu", "port moresby", "yellowknife", "fairbanks", "tbilisi", "yerevan",
    "chiang mai", "san sebastian", "gdansk",
]  # fmt: skip


def novel_values(model: ClassifierModel, pack, split, slot: str, values: list[str]) -> dict:
    """Each test text with an annotated `slot` span, the span replaced by a value no rule,
    list or example holds: how often the tagger finds exactly that span as `slot`."""
    texts, spans = [], []
    for n, text in enumerate(split.texts):
        for span in split.spans_of(n):
            if span.slot == slot:
                value = values[len(texts) % len(values)]
                texts.append(text[: span.start] + value + text[span.end :])
                spans.append((span.start, span.start + len(value)))
                break
    kind = pack.slot_types[slot]
    by_rules = sum(
        any(s.start == a and s.end == b for s in pack.extractor.extract_all(t, {kind}))
        for t, (a, b) in zip(texts, spans, strict=True)
    )
    preds = predict(model, texts)
    found = sum(
        any(e.entity == slot and (e.start, e.end) == ab for e in p.entities)
        for p, ab in zip(preds, spans, strict=True)
    )
    return {
        "slot": slot,
        "texts": len(texts),
        "found_by_tagger": found,
        "found_by_rules": by_rules,
        "examples": [
            {"text": t, "entities": [(e.entity, e.text) for e in p.entities]}
            for t, p in list(zip(texts, preds, strict=True))[:8]
        ],
    }


if __name__ == "__main__":
    main()
