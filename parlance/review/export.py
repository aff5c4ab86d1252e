"""Accepted review items into the pack: `reviewed.yml`, deduplicated against every example
the pack already has (and against itself), with a seeded share held out as test examples.

The held-out choice depends on the text alone (a hash), so exporting the same items again,
or from another replica's inbox, puts each text on the same side.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from parlance.pack import Pack
from parlance.pack.models import OOS, ReviewedFile
from parlance.review.store import ReviewItem

REVIEWED_FILE = "reviewed.yml"
HEADER = (
    "# Examples accepted in review (parlance review export): what users typed, labelled by\n"
    "# a reviewer. Training adds `examples` to the pack's own; `test_examples` are held out\n"
    "# (parlance evaluate --compare reports them). Edit freely; the next export merges.\n"
)


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def held_out(text: str, share: float) -> bool:
    digest = hashlib.sha256(normalise(text).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass
class ExportResult:
    added: dict[str, list[str]] = field(default_factory=dict)  # label -> new examples
    held_out: dict[str, list[str]] = field(default_factory=dict)  # label -> new tests
    duplicates: list[tuple[int, str, str]] = field(default_factory=list)  # id, text, where
    # the same text already in the pack under another label: id, text, label, where; left
    # accepted in the inbox (a relabel that corrects the pack is for a person to apply)
    conflicts: list[tuple[int, str, str, str]] = field(default_factory=list)
    exported_ids: list[int] = field(default_factory=list)
    path: Path | None = None

    @property
    def n_added(self) -> int:
        return sum(map(len, self.added.values())) + sum(map(len, self.held_out.values()))


def known_texts(pack: Pack, external: Iterable[tuple[str, str]] = ()) -> dict[str, tuple[str, str]]:
    """Normalised text -> (its label, where it is), over the pack's examples, its
    reviewed.yml and `external` (label, text) pairs (a pack whose examples live elsewhere,
    CLINC150's)."""
    out: dict[str, tuple[str, str]] = {}
    for which in (pack.examples, pack.test_examples):
        for label, examples in which.items():
            for e in examples:
                out.setdefault(normalise(e.text), (label, f"{label} in intents.yml"))
    for which in ("examples", "test_examples"):
        for label, texts in pack.reviewed_texts(which).items():
            for text in texts:
                out.setdefault(normalise(text), (label, f"{label} in {REVIEWED_FILE}"))
    for label, text in external:
        out.setdefault(normalise(text), (label, f"{label} in the pack's examples"))
    return out


def export_items(
    pack: Pack,
    items: Iterable[ReviewItem],
    test_share: float = 0.2,
    external: Iterable[tuple[str, str]] = (),
    dry_run: bool = False,
) -> ExportResult:
    """Writes the accepted `items` into the pack's reviewed.yml (unless `dry_run`). The
    result's `exported_ids` are the items now in the pack: those written and duplicates
    with the same label; a text the pack has under another label is a conflict, left for a
    person to settle. The file is replaced in one step (written beside it, then renamed)."""
    from parlance.pack.writer import dump_yaml

    seen = known_texts(pack, external)
    doc = pack.reviewed.model_dump()
    result = ExportResult(path=pack.root / REVIEWED_FILE)
    for item in items:
        label = item.label or item.predicted
        if label != OOS and label not in pack.intents:
            raise ValueError(
                f"item {item.id}: label {label!r} is not an intent of pack {pack.name!r}"
            )
        key = normalise(item.text)
        if key in seen:
            known_label, where = seen[key]
            if known_label == label:
                result.duplicates.append((item.id, item.text, where))
                result.exported_ids.append(item.id)  # in the pack already, as decided
            else:
                result.conflicts.append((item.id, item.text, label, where))
            continue
        result.exported_ids.append(item.id)
        seen[key] = (label, f"{label} in {REVIEWED_FILE}")
        which = "test_examples" if held_out(item.text, test_share) else "examples"
        entry = (
            doc["out_of_scope"]
            if label == OOS
            else doc["intents"].setdefault(label, {"examples": [], "test_examples": []})
        )
        entry[which].append(item.text.strip())
        target = result.held_out if which == "test_examples" else result.added
        target.setdefault(label, []).append(item.text.strip())
    if not dry_run and result.n_added:
        doc = ReviewedFile.model_validate(doc).model_dump()  # what the loader will accept
        doc["intents"] = dict(sorted(doc["intents"].items()))
        partial = result.path.with_suffix(".yml.tmp")
        partial.write_text(HEADER + dump_yaml(doc), encoding="utf-8")
        os.replace(partial, result.path)
    return result
