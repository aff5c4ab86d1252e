"""The SNIPS 2017 custom-intent benchmark (`sonos/nlu-benchmark`, 2017-06-custom-intent-
engines): `train_<Intent>_full.json` and `validate_<Intent>.json`, each
`{"<Intent>": [{"data": [{"text": "..."}, {"text": "...", "entity": "<slot>"}]}]}`.

Training files become the examples, `validate_*` the test examples. Every slot becomes a
list type of the values seen in the training files only, so the test set stays unseen by
the slot extractor too. Segments are joined into the utterance and turned into markup that
parses back to exactly that utterance (spaces at a span's edges move outside it; runs of
whitespace become one space).
"""

from __future__ import annotations

import re
from pathlib import Path

from parlance.importers import (
    ExampleSet,
    ImportReport,
    Names,
    PackImportError,
    assistant_name,
    check_output,
    intents_doc,
    load_json,
    make_example,
    write_and_check,
)
from parlance.slots import BUILTIN_TYPES

_TRAIN = re.compile(r"^train_(?P<intent>.+?)(?:_full)?\.json$")
_VALIDATE = re.compile(r"^validate_(?P<intent>.+)\.json$")


def _utterances(path: Path, label: str, notes: list[str]) -> list[list[tuple[str, str | None]]]:
    rel = path.name
    doc = load_json(path, rel, notes)
    if not isinstance(doc, dict) or len(doc) != 1:
        raise PackImportError(rel, "", 'expected {"<Intent>": [utterances]} with one intent')
    ((key, items),) = doc.items()
    if key != label:
        raise PackImportError(rel, key, f"the file name says intent {label!r}")
    if not isinstance(items, list):
        raise PackImportError(rel, key, "must be a list of utterances")
    out = []
    for i, item in enumerate(items):
        entry = f"{key}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("data"), list):
            raise PackImportError(rel, entry, 'expected {"data": [segments]}')
        segs = []
        for j, seg in enumerate(item["data"]):
            if not isinstance(seg, dict) or not isinstance(seg.get("text"), str):
                raise PackImportError(rel, f"{entry}.data[{j}]", 'expected {"text": "..."}')
            entity = seg.get("entity")
            if entity is not None and (not isinstance(entity, str) or not entity.strip()):
                raise PackImportError(rel, f"{entry}.data[{j}]", f"entity {entity!r}")
            segs.append((seg["text"], entity))
        out.append(segs)
    return out


def import_snips(
    src: Path, out: Path, name: str | None = None, overwrite: bool = False
) -> ImportReport:
    """Import a directory in the SNIPS 2017 layout into a pack at `out`."""
    src, out = Path(src), Path(out)
    check_output(out, overwrite)
    if not src.is_dir():
        raise PackImportError(src, "", "not a directory (expected the SNIPS 2017 JSON files)")
    report = ImportReport("snips", str(src), out)
    notes = report.notes
    train: dict[str, Path] = {}
    test: dict[str, Path] = {}
    for path in sorted(src.glob("*.json")):
        if m := _TRAIN.match(path.name):
            train[m["intent"]] = path
        elif m := _VALIDATE.match(path.name):
            test[m["intent"]] = path
    if not train:
        raise PackImportError(src, "", "no train_<Intent>_full.json files")
    for label in sorted(set(test) - set(train)):
        notes.append(f"{test[label].name}: no training file for {label!r}; not imported")
    intents, slots = Names("intent", "intent"), Names("slot", "slot")
    examples = ExampleSet(src.name)
    values: dict[str, dict[str, str]] = {}  # slot -> lower-cased value -> value as first seen
    used: dict[str, list[str]] = {}  # intent -> slots annotated in its training examples
    test_only: set[str] = set()
    for label, path in sorted(train.items()):
        intent = intents(label)
        used[intent] = []
        for kind, file in (("train", path), ("test", test.get(label))):
            if file is None:
                continue
            for segs in _utterances(file, label, notes):
                pieces = [(t, slots(e) if e else None, None) for t, e in segs]
                ex, fixes = make_example(pieces)
                written = examples.add(intent, ex, test=kind == "test", fixes=fixes)
                for span in written.spans if written else ():
                    if kind == "train":
                        values.setdefault(span.slot, {}).setdefault(span.text.lower(), span.text)
                        if span.slot not in used[intent]:
                            used[intent].append(span.slot)
                    elif span.slot not in values:
                        test_only.add(span.slot)
    notes += intents.notes() + slots.notes()
    sets, more = examples.finish()
    notes += more

    types: dict[str, dict] = {}
    slot_docs: dict[str, dict] = {}
    for slot in sorted(set(values) | test_only):
        tname = f"{slot}_values" if slot in BUILTIN_TYPES else slot
        if slot in values:
            types[tname] = {"kind": "list", "values": sorted(values[slot].values(), key=str.lower)}
        else:
            types[tname] = {"kind": "free_text"}
        slot_docs[slot] = {"type": tname}
    test_only -= set(values)
    if test_only:
        notes.append(
            f"slot(s) annotated only in validate_* files: {', '.join(sorted(test_only))}; "
            "declared with a free_text type (no values from the test set)"
        )
    notes.append(
        f"{len(values)} slot type(s) are lists of the values seen in the training files "
        "only (validate_* files not used for them)"
    )
    originals = {v: k for k, v in intents.map.items()}
    extra = {
        i: {
            "description": f"SNIPS 2017 intent {originals[i]}",
            **({"slots": sorted(used[i])} if used.get(i) else {}),
        }
        for i in sets
        if i in originals
    }
    header = (
        f"Imported from the SNIPS 2017 benchmark ({src.name}) by parlance.importers.snips.\n"
        "Data: CC0 1.0, Coucke et al. 2018, arXiv:1805.10190."
    )
    docs = {
        "assistant": {
            "name": assistant_name(name, src, "snips"),
            "description": "The SNIPS 2017 custom-intent benchmark (Coucke et al. 2018, CC0 "
            "1.0): seven intents with slot annotations.",
        },
        "intents": intents_doc(sets, extra),
        "slots": {"types": types, "slots": slot_docs},
    }
    return write_and_check(report, out, docs, overwrite, header)
