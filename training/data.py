"""Training data of an assistant pack: its inline examples, or (CLINC150) the original
oos-eval JSON layout on disk, or the hub dataset `clinc_oos`.

Both sources produce the same `ClincData`: three splits of (text, intent-name) pairs with the
out-of-scope queries labelled ``oos`` and kept in the same split as the in-scope ones, and one
label list (150 intents sorted by name, then ``oos`` last). Labels are names, never the hub's
integer ids, so a model trained from either source has the same ``labels`` in its manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

OOS = "oos"

# Variant name -> file in the oos-eval layout.
VARIANT_FILES = {
    "full": "data_full.json",
    "small": "data_small.json",
    "imbalanced": "data_imbalanced.json",
    "plus": "data_oos_plus.json",
}
# The hub dataset has no `full` config: its `plus` is the full data with 250 oos training
# examples. `full` keeps only 100 of them and cannot be rebuilt exactly from the hub.
HUB_CONFIGS = ("plus", "small", "imbalanced")
HUB_SPLITS = {"train": "train", "val": "validation", "test": "test"}
SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """The data set could not be found or does not look like CLINC150."""


@dataclass
class Split:
    texts: list[str]
    intents: list[str]
    # Slot annotations per text (`parlance.pack.markup.Span`s), for a pack whose examples
    # carry markup; None when no example of the data set has any.
    spans: list[tuple] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_oos(self) -> int:
        return sum(1 for i in self.intents if i == OOS)

    def spans_of(self, i: int) -> tuple:
        return self.spans[i] if self.spans is not None else ()

    def select(self, indices) -> Split:
        idx = list(indices)
        return Split(
            [self.texts[i] for i in idx],
            [self.intents[i] for i in idx],
            None if self.spans is None else [self.spans[i] for i in idx],
        )

    def subset(self, keep: set[str]) -> Split:
        return self.select(i for i, intent in enumerate(self.intents) if intent in keep)

    def extended(self, texts: list[str], intent: str) -> Split:
        """This split plus `texts` labelled `intent` (without annotations)."""
        return Split(
            self.texts + texts,
            self.intents + [intent] * len(texts),
            None if self.spans is None else self.spans + [()] * len(texts),
        )


@dataclass
class ClincData:
    train: Split
    val: Split
    test: Split
    labels: list[str]  # 150 intents sorted by name, then "oos" last
    source: str  # "dir:/path/data_full.json" or "hub:clinc_oos/plus"
    checksum: str  # sha256 over the loaded examples; identical data -> identical checksum
    domains: dict[str, list[str]] = field(default_factory=dict)  # domain -> intents
    pack: dict | None = None  # name, version, checksum of the pack the data belongs to
    background: dict | None = None  # background out-of-scope sentences added, per split
    # The pack's reviewed.yml test_examples: traffic reviewed and held out, reported apart
    # from `test` (which stays the benchmark's); None when the pack has none.
    reviewed: Split | None = None

    def split(self, name: str) -> Split:
        return getattr(self, name)

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    def with_splits(
        self,
        train: Split | None = None,
        val: Split | None = None,
        test: Split | None = None,
        **changes,
    ) -> ClincData:
        """The same data with the given splits replaced (the checksum recomputed over the
        result) and other fields changed."""
        splits = {
            "train": self.train if train is None else train,
            "val": self.val if val is None else val,
            "test": self.test if test is None else test,
        }
        return replace(self, **splits, checksum=_checksum(splits), **changes)

    def with_train(self, train: Split) -> ClincData:
        """The same data with another training split (checksum recomputed)."""
        return self.with_splits(train=train)

    def without_oos(self) -> ClincData:
        """The same data without out-of-scope training and validation queries (test keeps
        them), checksum recomputed."""
        inscope = set(self.labels) - {OOS}
        return self.with_splits(
            train=self.train.subset(inscope),
            val=self.val.subset(inscope),
            source=self.source + "#no-pack-oos",
            background=None,
        )

    def restrict(self, intents: list[str], max_per_intent: int | None = None) -> ClincData:
        """A smaller copy for tests and smoke runs: only `intents` (plus oos), optionally capped."""
        keep = set(intents) | {OOS}
        unknown = keep - set(self.labels)
        if unknown:
            raise DataError(f"unknown intents: {sorted(unknown)}")

        def cap(split: Split) -> Split:
            sub = split.subset(keep)
            if max_per_intent is None:
                return sub
            seen: dict[str, int] = {}
            kept = []
            for n, i in enumerate(sub.intents):
                if seen.get(i, 0) < max_per_intent:
                    seen[i] = seen.get(i, 0) + 1
                    kept.append(n)
            return sub.select(kept)

        labels = sorted(keep - {OOS}) + [OOS]
        return self.with_splits(
            **{name: cap(self.split(name)) for name in SPLITS},
            reviewed=None if self.reviewed is None else cap(self.reviewed),
            labels=labels,
            source=self.source + f"#subset:{len(labels) - 1}",
            domains={d: [i for i in v if i in keep] for d, v in self.domains.items()},
        )


def _checksum(splits: dict[str, Split]) -> str:
    h = hashlib.sha256()
    for name in SPLITS:
        split = splits[name]
        for n, (text, intent) in enumerate(zip(split.texts, split.intents, strict=True)):
            h.update(f"{name}\t{intent}\t{text}\n".encode())
            # annotations count too (data without any keeps the checksum it always had);
            # their values do not (training never reads them, and silver annotations of
            # relative dates would change with the day)
            for span in split.spans_of(n):
                h.update(f"\t{span.slot}:{span.start}:{span.end}\n".encode())
    return "sha256:" + h.hexdigest()


def _finish(
    splits: dict[str, Split],
    source: str,
    domains: dict[str, list[str]],
    require_oos: bool = True,
    require_test: bool = True,
) -> ClincData:
    for name in SPLITS:
        if len(splits[name]) == 0 and (name != "test" or require_test):
            raise DataError(f"{source}: split {name!r} is empty")
    if require_oos and splits["train"].n_oos == 0:
        raise DataError(f"{source}: no out-of-scope ('oos') training examples")
    intents = {i for s in splits.values() for i in s.intents} - {OOS}
    labels = sorted(intents) + [OOS]
    for name in ("val", "test"):
        extra = set(splits[name].intents) - set(splits["train"].intents)
        if extra:
            raise DataError(
                f"{source}: {name} has intents never seen in train: {sorted(extra)[:5]}"
            )
    return ClincData(
        **splits, labels=labels, source=source, checksum=_checksum(splits), domains=domains
    )


def _read_pairs(obj: dict, key: str, path: Path) -> Split:
    rows = obj.get(key)
    if not isinstance(rows, list):
        raise DataError(f"{path}: key {key!r} missing or not a list")
    texts, intents = [], []
    for n, row in enumerate(rows):
        if (
            not isinstance(row, list | tuple)
            or len(row) != 2
            or not all(isinstance(x, str) for x in row)
        ):
            raise DataError(f"{path}: {key}[{n}] is not a [text, intent] pair of strings: {row!r}")
        texts.append(row[0])
        intents.append(row[1])
    return Split(texts, intents)


def load_domains(data_dir: Path, filename: str = "domains.json") -> dict[str, list[str]]:
    path = Path(data_dir) / filename
    if not path.is_file():
        return {}
    try:
        domains = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(domains, dict):
        raise DataError(f"{path}: expected an object of domain -> [intents]")
    return {str(k): list(v) for k, v in domains.items()}


def load_from_dir(data_dir: str | os.PathLike, variant: str = "full") -> ClincData:
    """Load the oos-eval JSON layout (`data_full.json`, ...) from `data_dir`."""
    if variant not in VARIANT_FILES:
        raise DataError(f"unknown variant {variant!r}; choose one of {sorted(VARIANT_FILES)}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory not found: {data_dir}")
    path = data_dir / VARIANT_FILES[variant]
    if not path.is_file():
        raise DataError(f"{path} not found (variant {variant!r} of the oos-eval layout)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid UTF-8 JSON ({e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object with train/val/test keys")
    splits = {}
    for name in SPLITS:
        inscope = _read_pairs(obj, name, path)
        oos = _read_pairs(obj, f"oos_{name}", path)
        if any(i != OOS for i in oos.intents):
            raise DataError(f"{path}: oos_{name} holds labels other than 'oos'")
        splits[name] = Split(inscope.texts + oos.texts, inscope.intents + oos.intents)
    return _finish(splits, f"dir:{path.resolve()}", load_domains(data_dir))


def _hub_splits(datasets, name: str, variant: str, kwargs: dict) -> dict[str, Split]:
    try:
        ds = datasets.load_dataset(name, variant, **kwargs)
    except Exception as e:  # network errors, missing dataset: surface one clear message
        raise DataError(
            f"could not load hub dataset {name!r} config {variant!r}: {e}. Offline? "
            "Pass --data-dir or set CLINC150_DIR to the oos-eval JSON directory."
        ) from e
    splits = {}
    for ours, theirs in HUB_SPLITS.items():
        if theirs not in ds:
            raise DataError(f"hub dataset {name!r} has no {theirs!r} split")
        part = ds[theirs]
        feature = part.features.get("intent")
        names = getattr(feature, "names", None)
        if names is None or "text" not in part.column_names:
            raise DataError(f"hub dataset {name!r}: expected columns text + intent (ClassLabel)")
        splits[ours] = Split(list(part["text"]), [names[i] for i in part["intent"]])
    return splits


def load_from_hub(variant: str = "plus", name: str = "clinc_oos", **kwargs) -> ClincData:
    """Load the hub dataset (or a local copy in its layout: `name` may be a directory)."""
    if variant not in HUB_CONFIGS:
        raise DataError(
            f"the hub dataset has configs {list(HUB_CONFIGS)}, not {variant!r}"
            + (" (use 'plus', or --data-dir for the original 'full')" if variant == "full" else "")
        )
    try:
        import datasets  # training extra; imported lazily so serving code never needs it
    except ImportError as e:  # pragma: no cover - environment problem
        raise DataError("loading from the hub needs the `datasets` package") from e
    with contextlib.ExitStack() as stack:
        if Path(name).is_dir() and "cache_dir" not in kwargs:
            # datasets keys its cache of a local copy on the folder's name and config, not
            # on the files' contents, so an edited copy (or another folder of the same
            # name) would load stale rows: read a local copy through a throwaway cache.
            kwargs["cache_dir"] = stack.enter_context(tempfile.TemporaryDirectory())
        splits = _hub_splits(datasets, name, variant, kwargs)
    # The hub carries no domain map; use the copy of the upstream domains.json in the pack.
    packaged = Path(__file__).resolve().parents[1] / "assistants" / "clinc150"
    return _finish(splits, f"hub:{name}/{variant}", load_domains(packaged, "domains.json"))


def load_clinc(
    data_dir: str | os.PathLike | None = None, variant: str = "full", hub_name: str = "clinc_oos"
) -> ClincData:
    """`data_dir`, else `$CLINC150_DIR`, else the hub dataset."""
    data_dir = data_dir or os.environ.get("CLINC150_DIR") or None
    if data_dir:
        return load_from_dir(data_dir, variant)
    return load_from_hub(variant, hub_name)


# ---------------------------------------------------------------- assistant packs


def _held_out(texts: list, share: float, seed: int, key: str) -> tuple[list, list]:
    """A seeded split of one intent's examples into (train, val): at least one of each when
    there are two or more."""
    import random

    order = list(range(len(texts)))
    random.Random(f"{seed}:{key}").shuffle(order)
    n_val = min(max(1, round(len(texts) * share)), len(texts) - 1) if len(texts) > 1 else 0
    val = set(order[:n_val])
    return (
        [t for i, t in enumerate(texts) if i not in val],
        [t for i, t in enumerate(texts) if i in val],
    )


def load_pack_data(
    pack,
    data_dir: str | os.PathLike | None = None,
    variant: str | None = None,
    hub_name: str = "clinc_oos",
    seed: int = 42,
    background: bool | None = None,
    pack_oos: bool = True,
) -> ClincData:
    """The pack's examples as train / val / test splits with the pack's labels.

    External examples (`examples_from`) come from their loader; inline ones are split per
    intent: `test_examples` are the test split, and a seeded share of `examples` is held out
    for validation. Out-of-scope examples (the pack's own, or the bundled background set when
    `background` or the pack's setting asks for it, by default when the pack has none) are
    labelled `oos`; a pack without any still trains (its threshold comes from in-scope
    validation queries alone, docs/ood.md). `pack_oos=False` (studies) drops the pack's own
    out-of-scope training and validation queries first, as if it had none."""
    source = pack.assistant.examples_from
    if source is not None:
        if source.loader != "clinc150":  # pragma: no cover - the model allows no other
            raise DataError(f"unknown examples loader {source.loader!r}")
        data = load_clinc(data_dir, variant or source.variant, hub_name)
        unknown = set(data.labels) - set(pack.labels)
        if unknown:
            raise DataError(
                f"{data.source}: intents not in pack {pack.name!r}: {sorted(unknown)[:5]}"
            )
        data.pack = pack.identity()
        data = with_background(data if pack_oos else data.without_oos(), pack, background, seed)
        # After the background set: reviewed out-of-scope texts do not make a pack without
        # out-of-scope examples of its own lose it.
        return with_reviewed(data, pack)
    annotated = any(
        e.spans for x in (pack.examples, pack.test_examples) for v in x.values() for e in v
    )
    splits = {name: Split([], [], [] if annotated else None) for name in SPLITS}
    share = pack.assistant.validation_share

    def add(split: Split, intent: str, examples) -> None:
        split.texts += [e.text for e in examples]
        split.intents += [intent] * len(examples)
        if split.spans is not None:
            split.spans += [e.spans for e in examples]

    for intent, examples in pack.examples.items():
        train, val = _held_out(examples, share, seed, intent)
        add(splits["train"], intent, train)
        add(splits["val"], intent, val)
        add(splits["test"], intent, pack.test_examples.get(intent, []))
    data = _finish(
        splits, f"pack:{pack.name}@{pack.version}", {}, require_oos=False, require_test=False
    )
    data.labels = pack.labels  # every intent, `oos` last, even one with no test example
    data.pack = pack.identity()
    data = with_background(data if pack_oos else data.without_oos(), pack, background, seed)
    return with_reviewed(data, pack)


def with_reviewed(data: ClincData, pack) -> ClincData:
    """The pack's reviewed.yml merged in: its examples join the training split, its
    test_examples become the `reviewed` held-out split."""
    train = data.train
    for label, texts in pack.reviewed_texts("examples").items():
        train = train.extended(texts, label)
    held = pack.reviewed_texts("test_examples")
    reviewed = Split([], [], None)
    for label, texts in held.items():
        reviewed = reviewed.extended(texts, label)
    if train is data.train and not held:
        return data
    return data.with_splits(
        train=train, reviewed=reviewed if held else None, source=data.source + "+reviewed"
    )


def with_background(data: ClincData, pack, background: bool | None, seed: int) -> ClincData:
    wanted = pack.assistant.out_of_scope.background if background is None else background
    if wanted is None:
        wanted = data.train.n_oos == 0
    if not wanted:
        return data
    from training.background import background_split

    train, val = background_split(
        [t for t, i in zip(data.train.texts, data.train.intents, strict=True) if i != OOS],
        seed=seed,
    )
    return data.with_splits(
        train=data.train.extended(train, OOS),
        val=data.val.extended(val, OOS),
        source=data.source + "+background",
        background={"train": len(train), "val": len(val)},
    )
