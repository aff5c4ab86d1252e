"""CLINC150 (Larson et al., 2019) from its oos-eval JSON layout into a self-contained pack.

The bundled `assistants/clinc150` pack keeps its examples outside (`examples_from`); this
importer writes them inline instead, for a pack that travels without the data directory or
that someone wants to edit. The split mapping: `train` and `val` become the examples (the
pack holds out `validation_share` of each intent itself, so a separate validation split has
no place in it), `test` the test examples, `oos_train`/`oos_val` the out-of-scope examples
and `oos_test` the out-of-scope test examples. The reading is `training.data.load_from_dir`,
so the importer accepts exactly what training accepts.
"""

from __future__ import annotations

from pathlib import Path

from parlance.importers import (
    ExampleSet,
    ImportReport,
    PackImportError,
    assistant_name,
    check_output,
    intents_doc,
    make_example,
    write_and_check,
)
from parlance.pack.models import OOS

# CLINC150's own intents that steer a conversation (dialogue.yml meta_intents).
META = {"affirm": "yes", "deny": "no", "maybe": "maybe", "cancel": "cancel", "repeat": "repeat"}


def import_clinc150(
    src: Path,
    out: Path,
    name: str | None = None,
    overwrite: bool = False,
    variant: str = "full",
) -> ImportReport:
    """Import the oos-eval directory `src` (variant full, small, imbalanced or plus)."""
    from training.data import VARIANT_FILES, DataError, load_from_dir

    src, out = Path(src), Path(out)
    check_output(out, overwrite)
    try:
        data = load_from_dir(src, variant)
    except DataError as e:
        path = src / VARIANT_FILES.get(variant, "")
        message = str(e)
        for prefix in (f"dir:{path.resolve()}: ", f"{path}: "):
            message = message.removeprefix(prefix)
        raise PackImportError(path, "", message) from None
    rel = VARIANT_FILES[variant]
    report = ImportReport("clinc150", str(src / rel), out)
    notes = report.notes
    examples = ExampleSet(rel)
    for split in ("train", "val", "test"):
        part = data.split(split)
        for text, intent in zip(part.texts, part.intents, strict=True):
            ex, fixes = make_example([(text, None, None)])
            examples.add(intent, ex, test=split == "test", fixes=fixes)
    n_val = len(data.val)
    notes.append(
        f"{rel}: the {n_val - data.val.n_oos} val and {data.val.n_oos} oos_val examples are "
        "kept as examples (the pack holds out validation_share of each intent itself)"
    )
    sets, more = examples.finish(order=[i for i in data.labels if i != OOS])
    notes += more
    describe = {i: d.replace("_", " ") for d, intents in data.domains.items() for i in intents}
    if not describe:
        notes.append(f"{src.name}: no domains.json, so the intents have no descriptions")
    extra = {i: {"description": describe[i]} for i in sets if i in describe}
    meta = {group: [intent] for group, intent in META.items() if intent in sets}
    if meta:
        notes.append(
            "meta intents (dialogue.yml): " + ", ".join(f"{g}: {v[0]}" for g, v in meta.items())
        )
    pack_name = assistant_name(name, src, "clinc150")
    if name is None and variant != "full":
        pack_name = f"{pack_name}-{variant}"[:64]
    docs = {
        "assistant": {
            "name": pack_name,
            "description": f"CLINC150 (Larson et al., 2019, CC BY 3.0), variant {variant!r}, "
            "with its examples inline.",
        },
        "intents": intents_doc(sets, extra),
        "dialogue": {"meta_intents": meta} if meta else None,
    }
    header = (
        f"Imported from CLINC150 ({rel}) by parlance.importers.clinc150.\n"
        "Data: CC BY 3.0, Larson et al. 2019, 'An Evaluation Dataset for Intent\n"
        "Classification and Out-of-Scope Prediction'."
    )
    return write_and_check(report, out, docs, overwrite, header)
