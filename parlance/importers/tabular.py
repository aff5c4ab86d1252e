"""Labelled texts from a table: CSV (or TSV) with a `text,intent[,split]` header, or JSON
Lines with the same keys. This is the lowest common denominator of NLU exports
(spreadsheets, Dialogflow/LUIS dumps turned into rows, hand-labelled logs), so it is also
the messiest: the importer expects encodings other than UTF-8, stray whitespace, empty
rows, duplicates and the same text labelled twice, and reports each.

Rows labelled `oos` / `out_of_scope` become the pack's out-of-scope examples. A `split`
of `test` makes a test example; `validation`/`val`/`dev` rows are kept as training
examples (the pack holds out `validation_share` of each intent itself).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from parlance.importers import (
    OOS_LABELS,
    ExampleSet,
    ImportReport,
    Names,
    PackImportError,
    assistant_name,
    check_output,
    intents_doc,
    listing,
    make_example,
    read_text,
    write_and_check,
)
from parlance.pack.models import OOS

SPLITS = {
    "": "train",
    "train": "train",
    "training": "train",
    "test": "test",
    "testing": "test",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
}
Row = tuple[int, str | None, str | None, str | None]  # line, text, intent, split


def _csv_rows(text: str, rel: str, delimiter: str, notes: list[str]) -> list[Row]:
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[Row] = []
    blank = 0
    last = 0
    for row in reader:
        line, last = last + 1, reader.line_num
        if not row or all(not c.strip() for c in row):
            if header is not None:
                blank += 1
            continue
        if header is None:
            header = [c.strip().lower() for c in row]
            missing = [c for c in ("text", "intent") if c not in header]
            if missing:
                raise PackImportError(
                    rel,
                    f"line {line}",
                    f"the header needs columns 'text' and 'intent' (missing {missing}, "
                    f"found {header})",
                )
            extra = [c for c in header if c not in ("text", "intent", "split")]
            if extra:
                notes.append(f"{rel}: column(s) not imported: {', '.join(extra)}")
            cols = {c: header.index(c) for c in ("text", "intent", "split") if c in header}
            continue
        if len(row) != len(header):
            what = (
                f"missing column {header[len(row)]!r}"
                if len(row) < len(header)
                else "more fields than columns (an unquoted comma?)"
            )
            raise PackImportError(
                rel,
                f"line {line}",
                f"{len(row)} field(s) where the header has {len(header)}: {what}",
            )
        rows.append(
            (
                line,
                row[cols["text"]],
                row[cols["intent"]],
                row[cols["split"]] if "split" in cols else None,
            )
        )
    if header is None:
        raise PackImportError(rel, "", "empty: no header row")
    if blank:
        notes.append(f"{rel}: skipped {blank} blank line(s)")
    return rows


def _field(obj: dict, key: str, rel: str, line: int, required: bool) -> str | None:
    if key not in obj:
        if required:
            raise PackImportError(rel, f"line {line}", f"no {key!r} key (keys: {sorted(obj)})")
        return None
    v = obj[key]
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(v)
    raise PackImportError(rel, f"line {line}", f"{key!r} must be a string, not {v!r}")


def _jsonl_rows(text: str, rel: str, notes: list[str]) -> list[Row]:
    rows: list[Row] = []
    blank = 0
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            blank += 1
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise PackImportError(rel, f"line {n}", f"not valid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise PackImportError(rel, f"line {n}", "each line must be a JSON object")
        rows.append(
            (
                n,
                _field(obj, "text", rel, n, True),
                _field(obj, "intent", rel, n, True),
                _field(obj, "split", rel, n, False),
            )
        )
    if blank:
        notes.append(f"{rel}: skipped {blank} blank line(s)")
    return rows


def read_rows(src: Path, notes: list[str]) -> list[Row]:
    """The rows of a CSV/TSV/JSONL file (format by suffix, else by the first character)."""
    rel = src.name
    text, note = read_text(src, rel)
    if note:
        notes.append(note)
    suffix = src.suffix.lower()
    if suffix in (".jsonl", ".ndjson") or (
        suffix not in (".csv", ".tsv") and text.lstrip().startswith("{")
    ):
        return _jsonl_rows(text, rel, notes)
    return _csv_rows(text, rel, "\t" if suffix == ".tsv" else ",", notes)


def import_table(
    src: Path, out: Path, name: str | None = None, overwrite: bool = False
) -> ImportReport:
    """Import a CSV/TSV/JSONL file of `text,intent[,split]` rows into a pack at `out`."""
    src, out = Path(src), Path(out)
    check_output(out, overwrite)
    if not src.is_file():
        raise PackImportError(src, "", "file not found")
    rel = src.name
    report = ImportReport("csv", str(src), out)
    notes = report.notes
    rows = read_rows(src, notes)
    intents = Names("intent", "intent")
    examples = ExampleSet(rel)
    empty_text: list[int] = []
    no_intent: list[int] = []
    val_rows = 0
    for line, text, label, split in rows:
        kind = SPLITS.get((split or "").strip().lower())
        if kind is None:
            raise PackImportError(
                rel, f"line {line}", f"split {split!r}: use train, test or validation"
            )
        label = (label or "").strip()
        ex, fixes = make_example([(text or "", None, None)])
        if not ex.text:
            empty_text.append(line)
            continue
        if not label:
            no_intent.append(line)
            continue
        if kind == "val":
            val_rows += 1
        intent = OOS if label.lower() in OOS_LABELS else intents(label)
        examples.add(intent, ex, test=kind == "test", fixes=fixes)
    if empty_text:
        notes.append(
            f"{rel}: dropped {len(empty_text)} row(s) with an empty text (line(s) "
            + listing((str(n) for n in empty_text), 10, ", ")
            + ")"
        )
    if no_intent:
        notes.append(
            f"{rel}: dropped {len(no_intent)} row(s) without an intent (line(s) "
            + listing((str(n) for n in no_intent), 10, ", ")
            + ")"
        )
    if val_rows:
        notes.append(
            f"{rel}: {val_rows} validation row(s) kept as training examples (the pack holds "
            "out validation_share of each intent itself)"
        )
    notes += intents.notes()
    sets, more = examples.finish()
    notes += more
    if not any(n != OOS for n in sets):
        raise PackImportError(rel, "", "no intent has examples left to import")
    docs = {
        "assistant": {
            "name": assistant_name(name, src, "imported"),
            "description": f"Imported from {rel} by parlance.importers.tabular.",
        },
        "intents": intents_doc(sets),
    }
    return write_and_check(
        report, out, docs, overwrite, f"Imported from {rel} by parlance.importers.tabular."
    )
