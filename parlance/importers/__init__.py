"""Importers: other tools' training data turned into an assistant pack.

Each importer reads a source (a Rasa 3 project, a CSV/JSONL table of labelled texts, the
SNIPS 2017 benchmark files, the CLINC150 oos-eval JSON) and writes a pack with
`parlance.pack.writer.write_pack`. What cannot be mapped is never dropped silently: it is a
line of `ImportReport.notes` with a count and the reason. Input that cannot be read at all
(a missing file, invalid YAML/JSON, a wrong structure) is a `PackImportError` naming the
file, the entry and the problem. After writing, the report carries `check_pack`'s problems,
so a caller sees at once whether the pack is usable.

The helpers here are shared so that every importer normalises the same way: names to
lower_snake_case, text decoding with a note when a file is not UTF-8, whitespace, span
edges, markup that re-parses to exactly the example, and the example-set rules the pack
checks enforce (no text under two intents, no duplicates, no intent without examples).
"""

from __future__ import annotations

import json
import re
import unicodedata
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from parlance.pack.loader import Problem, check_pack
from parlance.pack.markup import Example, MarkupError, Span, parse
from parlance.pack.models import OOS
from parlance.pack.writer import PackWriteError, write_pack

MAX_TEXT = 1000  # the pack's limit on one example (models.Text)
MAX_LISTED = 20  # items named in one note before "and N more"
OOS_LABELS = {"oos", "out_of_scope", "out-of-scope", "outofscope"}


class PackImportError(ValueError):
    """The source cannot be imported: the message names the file, the entry and why."""

    def __init__(self, file: str | Path, entry: str, problem: str):
        self.file, self.entry, self.problem = str(file), entry, problem
        where = f"{file}: {entry}" if entry else str(file)
        super().__init__(f"{where}: {problem}")


@dataclass
class ImportReport:
    """What an import produced. `examples`/`test_examples` count in-scope examples;
    out-of-scope ones are counted apart. `responses` counts reply texts (intent replies,
    not form prompts). `problems` are `check_pack`'s on the written pack."""

    importer: str
    source: str
    out: Path
    intents: int = 0
    examples: int = 0
    test_examples: int = 0
    out_of_scope_examples: int = 0
    out_of_scope_test_examples: int = 0
    slots: int = 0
    forms: int = 0
    responses: int = 0
    notes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def counts(self) -> dict[str, int]:
        return {
            k: getattr(self, k)
            for k in (
                "intents",
                "examples",
                "test_examples",
                "out_of_scope_examples",
                "out_of_scope_test_examples",
                "slots",
                "forms",
                "responses",
            )
        }

    def summary(self) -> str:
        """A few lines for a terminal: counts, then notes, then the pack's problems."""
        counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in self.counts.items())
        lines = [f"imported {self.source} ({self.importer}) into {self.out}: {counts}"]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


Importer = Callable[..., ImportReport]


# ----------------------------------------------------------------- names


def snake(name: str, prefix: str = "x") -> str:
    """`AddToPlaylist`, `check.balance`, `ask-name`, `timeRange` -> lower_snake_case; a name
    that would not start with a letter gets `prefix_` in front (pack names must)."""
    s = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    s = re.sub(r"[^A-Za-z0-9]+", "_", s).strip("_").lower()
    if not s:  # nothing ASCII in it (问候, ...): a stable name rather than a merge
        s = f"{prefix}_{zlib.crc32(str(name).encode()):08x}"
    elif not s[0].isalpha():
        s = f"{prefix}_{s}"
    return s[:64].rstrip("_")


def assistant_name(name: str | None, src: Path, default: str) -> str:
    """The pack's `name`: the one asked for (checked), else one made from the source's name."""
    if name is not None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or len(name) > 64:
            raise PackImportError(
                "name", name, "assistant names are lower case letters, digits, '_' and '-'"
            )
        return name
    stem = src.stem if src.is_file() else src.name
    s = re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-_")[:64]
    return s or default


class Names:
    """Maps a source's names onto pack names, remembering renames and merges for the notes."""

    def __init__(self, kind: str, prefix: str):
        self.kind, self.prefix = kind, prefix
        self.map: dict[str, str] = {}

    def __call__(self, original: str) -> str:
        if original not in self.map:
            self.map[original] = snake(original, self.prefix)
        return self.map[original]

    def notes(self) -> list[str]:
        out = []
        renamed = [(o, n) for o, n in self.map.items() if o != n]
        if renamed:
            out.append(
                f"{len(renamed)} {self.kind} name(s) changed to lower_snake_case: "
                + listing(f"{o} -> {n}" for o, n in renamed)
            )
        by_new: dict[str, list[str]] = defaultdict(list)
        for o, n in self.map.items():
            by_new[n].append(o)
        for n, olds in by_new.items():
            if len(olds) > 1:
                out.append(
                    f"{self.kind}s {', '.join(repr(o) for o in olds)} all become {n!r}: merged"
                )
        return out


def listing(items: Iterable[str], limit: int = MAX_LISTED, sep: str = "; ") -> str:
    """Items for a note: the first `limit`, then how many more."""
    items = list(items)
    shown = sep.join(items[:limit])
    return shown + (f"{sep}and {len(items) - limit} more" if len(items) > limit else "")


# ----------------------------------------------------------------- reading files

_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED = re.compile("[\udc80-\udcff]+")


def decode(raw: bytes, name: str) -> tuple[str, str | None]:
    """The text of a file and, when it was not plain UTF-8, a note saying how it was read.

    Order: UTF-8 (a byte-order mark allowed); UTF-8 whose astral characters are written as
    surrogate pairs (CESU-8, what some JSON exporters produce for emoji); UTF-8 with a few
    stray bytes from another code page (read as cp1252); then cp1252, then Latin-1, which
    decodes anything. A file in a single-byte code page practically never contains valid
    UTF-8 multi-byte sequences, which is what tells the mixed case apart.
    """
    body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    try:
        return body.decode("utf-8"), None
    except UnicodeDecodeError as e:
        first = e.start + (len(raw) - len(body))
    try:
        joined = body.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass")
        text = joined.decode("utf-16")
    except UnicodeError:
        text = None
    if text is not None and not _SURROGATE.search(text):
        astral = [c for c in text if ord(c) > 0xFFFF]
        chars = ", ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(astral))
        others = sum(1 for c in text if 0x7F < ord(c) <= 0xFFFF)
        return text, (
            f"{name}: not valid UTF-8 (byte {first}): {len(astral)} character(s) beyond the "
            f"Basic Multilingual Plane ({chars}) are written as surrogate pairs (CESU-8); "
            "read as UTF-8 with the pairs joined"
            + (
                f" (its {others} other non-ASCII characters are valid UTF-8, which reading "
                "it as Latin-1 would garble)"
                if others
                else ""
            )
        )
    escaped = body.decode("utf-8", "surrogateescape")
    stray = _ESCAPED.findall(escaped)
    multibyte = sum(1 for c in escaped if ord(c) > 0x7F and not 0xDC80 <= ord(c) <= 0xDCFF)
    if multibyte > len(stray):
        text = _ESCAPED.sub(lambda m: _single_byte(bytes(ord(c) - 0xDC00 for c in m[0])), escaped)
        return text, (
            f"{name}: mostly UTF-8, but {len(stray)} byte sequence(s) are not (first at byte "
            f"{first}); read those as cp1252"
        )
    try:
        return body.decode("cp1252"), (
            f"{name}: not UTF-8 (byte {first}); decoded as cp1252 (Windows Western European)"
        )
    except UnicodeDecodeError:
        return body.decode("latin-1"), f"{name}: not UTF-8 (byte {first}); decoded as Latin-1"


def _single_byte(b: bytes) -> str:
    # cp1252 leaves five bytes undefined; Latin-1 reads those as the C1 controls they are
    return "".join(chr(x) if x in _UNDEFINED_1252 else bytes([x]).decode("cp1252") for x in b)


_UNDEFINED_1252 = frozenset({0x81, 0x8D, 0x8F, 0x90, 0x9D})


def read_text(path: Path, rel: str) -> tuple[str, str | None]:
    if not path.is_file():
        raise PackImportError(rel, "", "file not found")
    return decode(path.read_bytes(), rel)


def load_yaml(path: Path, rel: str, notes: list[str] | None = None):
    text, note = read_text(path, rel)
    if note and notes is not None:
        notes.append(note)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise PackImportError(rel, where, f"not valid YAML: {getattr(e, 'problem', e)}") from None


def load_json(path: Path, rel: str, notes: list[str] | None = None):
    text, note = read_text(path, rel)
    if note and notes is not None:
        notes.append(note)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno}"
        raise PackImportError(rel, where, f"not valid JSON: {e.msg}") from None


# ----------------------------------------------------------------- examples

_WS = re.compile(r"\s+")


def make_example(pieces: Iterable[tuple[str, str | None, str | None]]) -> tuple[Example, set[str]]:
    """An example from (text, slot or None, value or None) pieces whose texts concatenate to
    the utterance. Whitespace at the edge of a span moves outside it (a span is the words,
    not the spaces around them); whitespace runs become one space and the ends are
    stripped, as the pack stores them. Returns the example and which fixes were needed:
    'span_edges', 'whitespace' (inside the text), 'empty_span' (a span of only spaces,
    dropped)."""
    fixes: set[str] = set()
    merged: list[list] = []
    original = []
    for text, slot, value in pieces:
        original.append(text)
        parts: list[tuple[str, str | None, str | None]]
        if slot is None:
            parts = [(text, None, None)]
        elif not text.strip():
            fixes.add("empty_span")
            parts = [(text, None, None)]
        else:
            core = text.strip()
            if core != text:
                fixes.add("span_edges")
            lead = text[: len(text) - len(text.lstrip())]
            trail = text[len(text.rstrip()) :]
            parts = [(lead, None, None), (core, slot, value), (trail, None, None)]
        for t, s, v in parts:
            if s is None and merged and merged[-1][1] is None:
                merged[-1][0] += t
            elif s is not None or t:
                merged.append([t, s, v])
    out: list[str] = []
    spans: list[Span] = []
    pos = 0
    for i, (text, slot, value) in enumerate(merged):
        t = _WS.sub(" ", text)
        if i == 0:
            t = t.lstrip()
        if i == len(merged) - 1:
            t = t.rstrip()
        if slot is not None:
            v = _WS.sub(" ", value).strip() if value else ""
            spans.append(Span(slot, t, v or t, pos, pos + len(t)))
        out.append(t)
        pos += len(t)
    plain = "".join(out)
    if plain != "".join(original).strip():
        fixes.add("whitespace")
    return Example(plain, tuple(spans)), fixes


def _render(text: str, spans: Iterable[Span]) -> str | None:
    parts, pos = [], 0
    for s in sorted(spans, key=lambda s: s.start):
        parts.append(text[pos : s.start])
        if s.value == s.text:
            label = f"({s.slot})"
        elif not re.search(r"[()]", s.value):
            label = f"({s.slot}:{s.value})"
        elif not re.search(r"[{}]", s.value):
            label = json.dumps({"entity": s.slot, "value": s.value}, ensure_ascii=False)
        else:
            return None
        parts.append(f"[{s.text}]{label}")
        pos = s.end
    parts.append(text[pos:])
    return "".join(parts)


def _reads_back(marked: str | None, text: str, spans: tuple[Span, ...]) -> bool:
    if marked is None:
        return False
    try:
        back = parse(marked)
    except MarkupError:
        return False
    return back.text == text and back.spans == tuple(sorted(spans, key=lambda s: s.start))


def to_markup(ex: Example) -> tuple[str | None, str | None]:
    """Markup for `ex` that parses back to exactly it, and what had to give way (None when
    nothing): 'span_brackets' (an annotation whose text holds '[' or ']' is dropped: the
    markup has no escapes), 'text_brackets' (plain text that would read as an annotation:
    its brackets become parentheses), 'value' (a normalised value with both '(' and '{'
    dropped). None markup: it cannot be written at all."""
    issue = None
    spans = ex.spans
    if any("[" in s.text or "]" in s.text for s in spans):
        spans = tuple(s for s in spans if "[" not in s.text and "]" not in s.text)
        issue = "span_brackets"
    marked = _render(ex.text, spans)
    if marked is None:
        spans = tuple(
            Span(s.slot, s.text, s.text, s.start, s.end) if re.search(r"[{}]", s.value) else s
            for s in spans
        )
        marked, issue = _render(ex.text, spans), "value"
    if _reads_back(marked, ex.text, spans):
        return marked, issue
    table = {ord("["): "(", ord("]"): ")"}
    text = ex.text.translate(table)
    spans = tuple(
        Span(s.slot, text[s.start : s.end], s.value.translate(table), s.start, s.end) for s in spans
    )
    marked = _render(text, spans)
    if _reads_back(marked, text, spans):
        return marked, "text_brackets"
    return None, "unwritable"


def norm_key(text: str) -> str:
    """What the pack checks compare: case and spacing aside (checks._norm)."""
    return _WS.sub(" ", text.strip().lower())


@dataclass
class _Item:
    intent: str
    test: bool
    marked: str
    key: str


class ExampleSet:
    """Examples gathered from a source, then cleaned by the rules the pack checks enforce.

    `add` takes an example under a pack intent name (`OOS` for out-of-scope) and converts it
    to markup, counting what had to change. `finish` drops a text found under two intents
    from all of them (the classifier cannot learn both, and keeping the first would be a
    guess), drops duplicates within an intent (a test example that repeats a training one
    measures memory, not generalisation), and drops intents left without training
    examples; each with a note.
    """

    def __init__(self, source: str):
        self.source = source
        self.items: list[_Item] = []
        self.fixes: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()

    def add(
        self, intent: str, ex: Example, test: bool = False, fixes: Iterable[str] = ()
    ) -> Example | None:
        """Keep `ex` under `intent`; returns the example as it will be written (spans the
        markup could not carry are gone), or None when it cannot be kept at all."""
        self.fixes.update(fixes)
        if not ex.text:
            self.dropped["empty"] += 1
            return None
        marked, issue = to_markup(ex)
        if issue:
            self.fixes[issue] += 1
        if marked is None:
            self.dropped["unwritable"] += 1
            return None
        if len(marked) > MAX_TEXT:
            self.dropped["long"] += 1
            return None
        written = parse(marked)
        self.items.append(_Item(intent, test, marked, norm_key(written.text)))
        return written

    def fix_notes(self) -> list[str]:
        src, out = self.source, []
        f, d = self.fixes, self.dropped
        if f["span_edges"]:
            out.append(
                f"{src}: {f['span_edges']} slot span(s) began or ended with spaces: "
                "moved the spaces outside the annotation"
            )
        if f["empty_span"]:
            out.append(f"{src}: {f['empty_span']} slot span(s) of only spaces: not annotated")
        if f["whitespace"]:
            out.append(
                f"{src}: {f['whitespace']} text(s) held line breaks, tabs or repeated spaces: "
                "collapsed to single spaces"
            )
        if f["span_brackets"]:
            out.append(
                f"{src}: {f['span_brackets']} example(s) had an annotated span containing '[' "
                "or ']', which the markup cannot carry: those annotations were dropped (the "
                "text is kept)"
            )
        if f["text_brackets"]:
            out.append(
                f"{src}: {f['text_brackets']} example(s) had brackets that would read as "
                "markup: replaced '[' ']' with '(' ')'"
            )
        if f["value"]:
            out.append(
                f"{src}: {f['value']} normalised value(s) containing both parentheses and "
                "braces could not be written: the annotations keep the text as the value"
            )
        if d["empty"]:
            out.append(f"{src}: dropped {d['empty']} empty text(s)")
        if d["long"]:
            out.append(f"{src}: dropped {d['long']} text(s) longer than {MAX_TEXT} characters")
        if d["unwritable"]:
            out.append(f"{src}: dropped {d['unwritable']} text(s) the markup cannot represent")
        return out

    def finish(
        self, order: Iterable[str] = ()
    ) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
        """intent -> {"examples": [...], "test_examples": [...]} (OOS included when it has
        any), in `order` first, then in order of appearance; and the notes."""
        notes = self.fix_notes()
        src = self.source
        # Training examples only: a test set is kept as its source has it (a benchmark's
        # figures must stay comparable), overlaps are counted in a note instead.
        owners: dict[str, list[str]] = {}
        for it in self.items:
            if it.test:
                continue
            owners.setdefault(it.key, [])
            if it.intent not in owners[it.key]:
                owners[it.key].append(it.intent)
        clash = {k: v for k, v in owners.items() if len(v) > 1}
        if clash:
            first_text = {}
            for it in self.items:
                if it.key in clash and it.key not in first_text:
                    first_text[it.key] = parse(it.marked).text
            dropped = sum(1 for it in self.items if it.key in clash)
            notes.append(
                f"{src}: {len(clash)} text(s) appear under more than one intent; the classifier "
                f"cannot learn both, so all {dropped} of their examples were dropped: "
                + listing(f"{first_text[k]!r} ({', '.join(v)})" for k, v in clash.items())
            )
        dup_train: Counter[str] = Counter()
        dup_test: Counter[str] = Counter()
        leaked: Counter[str] = Counter()
        seen_train: dict[str, set[str]] = defaultdict(set)
        seen_test: dict[str, set[str]] = defaultdict(set)
        out: dict[str, dict[str, list[str]]] = {}
        for name in [*order, *(it.intent for it in self.items)]:
            out.setdefault(name, {"examples": [], "test_examples": []})
        for it in sorted(self.items, key=lambda it: it.test):  # stable: training ones first
            if it.key in clash and not it.test:
                continue
            if not it.test:
                if it.key in seen_train[it.intent]:
                    dup_train[it.intent] += 1
                    continue
                seen_train[it.intent].add(it.key)
            else:
                if it.key in seen_train[it.intent]:
                    leaked[it.intent] += 1
                if it.key in seen_test[it.intent]:
                    dup_test[it.intent] += 1
                seen_test[it.intent].add(it.key)
            slot = out.setdefault(it.intent, {"examples": [], "test_examples": []})
            slot["test_examples" if it.test else "examples"].append(it.marked)
        if dup_train:
            notes.append(
                f"{src}: dropped {sum(dup_train.values())} duplicate training example(s) (same "
                "text ignoring case and spacing): "
                + ", ".join(f"{i} {n}" for i, n in dup_train.items())
            )
        for counter, what in (
            (dup_test, "test example(s) that repeat another test example"),
            (leaked, "test example(s) that repeat a training example of the same intent"),
        ):
            if counter:
                notes.append(
                    f"{src}: kept {sum(counter.values())} {what} (the test set stays as the "
                    "source has it): " + ", ".join(f"{i} {n}" for i, n in counter.items())
                )
        empty = [n for n, v in out.items() if n != OOS and not v["examples"]]
        if empty:
            lost = sum(len(out[n]["test_examples"]) for n in empty)
            notes.append(
                f"{src}: dropped {len(empty)} intent(s) left without training examples: "
                + ", ".join(empty)
                + (f" (and their {lost} test example(s))" if lost else "")
            )
            for n in empty:
                del out[n]
        if OOS in out and not any(out[OOS].values()):
            del out[OOS]
        return out, notes


def intents_doc(
    sets: dict[str, dict[str, list[str]]], extra: dict[str, dict] | None = None
) -> dict:
    """The intents.yml dict: `extra` adds fields (description, slots) per intent."""
    intents = {}
    for name, ex in sets.items():
        if name == OOS:
            continue
        doc = dict((extra or {}).get(name, {}))
        doc["examples"] = ex["examples"]
        if ex["test_examples"]:
            doc["test_examples"] = ex["test_examples"]
        intents[name] = doc
    out: dict = {"intents": intents}
    if OOS in sets:
        oos = {k: v for k, v in sets[OOS].items() if v}
        if oos:
            out["out_of_scope"] = oos
    return out


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an occupied output directory before the import's work, not after it (the
    writer refuses too; this is the same rule, early, as the error callers catch)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PackImportError(out, "", "exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise PackImportError(
            out, "", "not empty: pass overwrite=True (parlance import --overwrite) to replace it"
        )


def write_and_check(
    report: ImportReport,
    out: Path,
    docs: dict[str, dict | None],
    overwrite: bool,
    header: str,
) -> ImportReport:
    """Write the pack, fill the report's counts from what was written, and check the pack."""
    check_output(out, overwrite)
    try:
        write_pack(out, **docs, overwrite=overwrite, header=header)
    except PackWriteError as e:  # an importer bug or input no pack can hold: say which
        raise PackImportError(report.source, "", str(e)) from e
    intents = docs["intents"] or {}
    report.intents = len(intents.get("intents", {}))
    report.examples = sum(len(i.get("examples", [])) for i in intents["intents"].values())
    report.test_examples = sum(len(i.get("test_examples", [])) for i in intents["intents"].values())
    oos = intents.get("out_of_scope", {})
    report.out_of_scope_examples = len(oos.get("examples", []))
    report.out_of_scope_test_examples = len(oos.get("test_examples", []))
    report.slots = len((docs.get("slots") or {}).get("slots", {}))
    report.forms = len((docs.get("forms") or {}).get("forms", {}))
    report.responses = sum(
        len(v) for v in (docs.get("responses") or {}).get("intents", {}).values()
    )
    report.problems = check_pack(out)[1]
    return report


# The registry; imported last because the importers use the helpers above.
from parlance.importers.clinc150 import import_clinc150  # noqa: E402
from parlance.importers.rasa import import_rasa  # noqa: E402
from parlance.importers.snips import import_snips  # noqa: E402
from parlance.importers.tabular import import_table  # noqa: E402

IMPORTERS: dict[str, Importer] = {
    "rasa": import_rasa,
    "csv": import_table,
    "snips": import_snips,
    "clinc150": import_clinc150,
}

__all__ = [
    "IMPORTERS",
    "ImportReport",
    "PackImportError",
    "import_clinc150",
    "import_rasa",
    "import_snips",
    "import_table",
]
