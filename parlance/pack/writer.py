"""Writing an assistant pack from plain dicts: what the importers (`parlance.importers`) and
any other generator of packs use, so that every written file has passed its pydantic model
and reads back through `parlance.pack.loader` exactly as it was meant.

Files are written readable rather than compact (block-style lists, key order as given,
unicode as is), because a person is expected to review and edit an imported pack.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from parlance.pack import models
from parlance.pack.loader import FILES, TESTS_DIR, Problem, _location

# PyYAML's resolver already quotes yes/no/on/off/true/false/null and numbers; YAML 1.1 also
# reads a bare y/n as a boolean, and other tools (editors, linters) follow that spec, so quote
# those too: an intent called "n" must stay a string wherever the file is read.
_YAML11_EXTRA = re.compile(r"^(?:y|Y|n|N)$")


class _PackDumper(yaml.SafeDumper):
    """yaml.safe_dump's dumper (not libyaml's, which escapes emoji and other characters
    beyond the BMP as \\U0001F355) with y/n quoted."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if _YAML11_EXTRA.match(value):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return dumper.represent_str(value)


_PackDumper.add_representer(str, _represent_str)


class PackWriteError(ValueError):
    """A dict that its file's model refuses; nothing was written."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"refusing to write an invalid pack ({len(problems)} error(s)):\n{lines}")


def dump_yaml(doc: dict) -> str:
    """YAML as a person would write it: block style, keys in the order given, unicode kept."""
    return yaml.dump(
        doc,
        Dumper=_PackDumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
        default_flow_style=False,
        indent=2,
    )


def _validate(rel: str, model: type[BaseModel], doc: dict) -> list[Problem]:
    if not isinstance(doc, dict):
        return [Problem(rel, "", "must be a mapping")]
    try:
        model.model_validate(doc)
    except ValidationError as e:
        return [
            Problem(rel, _location(err["loc"]), err["msg"].removeprefix("Value error, "))
            for err in e.errors()
        ]
    return []


def write_pack(
    out_dir: str | Path,
    assistant: dict,
    intents: dict,
    slots: dict | None = None,
    core_intents: dict | None = None,
    responses: dict | None = None,
    forms: dict | None = None,
    dialogue: dict | None = None,
    *,
    tests: dict[str, dict] | None = None,
    actions: dict | None = None,
    overwrite: bool = False,
    header: str | None = None,
    reviewed: dict | None = None,
) -> list[Path]:
    """Validate every file's dict through its model, then write the pack to `out_dir`.

    A file whose dict is None is not written (the loader's defaults apply). `tests` maps a
    file name under tests/ (`imported.yml`) to a conversations document. `header` becomes a
    comment at the top of every file (say where the pack came from). An existing non-empty
    `out_dir` is refused (FileExistsError) unless `overwrite`; with it, pack files of an
    earlier write that this one does not produce are removed, so no stale forms.yml survives
    an import without forms (reviewed.yml stays: it holds review decisions, not imports).
    Nothing is written when any dict is invalid (PackWriteError).
    Returns the paths written.
    """
    out = Path(out_dir)
    docs: dict[str, dict] = {}
    given = {
        "assistant.yml": assistant,
        "intents.yml": intents,
        "slots.yml": slots,
        "core_intents.yml": core_intents,
        "responses.yml": responses,
        "forms.yml": forms,
        "actions.yml": actions,
        "dialogue.yml": dialogue,
        "reviewed.yml": reviewed,
    }
    assert set(given) == set(FILES), "every pack file has a parameter"
    for rel in FILES:
        if given[rel] is not None:
            docs[rel] = given[rel]
    for fname, doc in (tests or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+\.yml", fname):
            raise PackWriteError([Problem(f"{TESTS_DIR}/{fname}", "", "not a plain .yml name")])
        docs[f"{TESTS_DIR}/{fname}"] = doc
    problems: list[Problem] = []
    for rel, doc in docs.items():
        model = FILES.get(rel, models.ConversationsFile)
        problems += _validate(rel, model, doc)
    if problems:
        raise PackWriteError(problems)

    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass overwrite=True to replace the pack")
        # reviewed.yml is what people decided in review, not what an import writes: kept
        stale = [out / rel for rel in FILES if rel not in docs and rel != "reviewed.yml"]
        tests_dir = out / TESTS_DIR
        if tests_dir.is_dir():
            stale += [p for p in tests_dir.glob("*.y*ml") if f"{TESTS_DIR}/{p.name}" not in docs]
        for path in stale:
            if path.is_file():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    comment = "".join(f"# {line}\n" if line else "#\n" for line in (header or "").splitlines())
    written = []
    for rel, doc in docs.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(comment + dump_yaml(doc), encoding="utf-8")
        written.append(path)
    return written


__all__ = ["PackWriteError", "dump_yaml", "write_pack"]
