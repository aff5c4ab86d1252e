"""Reading the project's data files with errors that name the file and the problem.

Every loader (label map, reply templates, gazetteers, artifact manifests) refuses a broken
file at start-up with its own exception type; these helpers keep the messages uniform.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def read_yaml_mapping(path: str | Path, error: type[Exception], what: str, required: str) -> dict:
    """A YAML file whose top level is a mapping with the key `required`."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid YAML ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get(required), dict):
        raise error(f"{path}: expected a mapping with 'version' and '{required}'")
    return doc


def read_manifest(artifact_dir: str | Path, kind: str, error: type[Exception]) -> dict:
    """`manifest.json` of an artifact directory, checked to be of the given `kind`."""
    path = Path(artifact_dir) / "manifest.json"
    if not path.is_file():
        raise error(f"{path} not found: not a {kind} artifact directory")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: invalid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("kind") != kind:
        found = manifest.get("kind") if isinstance(manifest, dict) else None
        raise error(f"{path}: kind is {found!r}, not {kind!r}")
    return manifest
