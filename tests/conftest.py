"""Shared fixtures: the real CLINC150 directory and small real models trained once a session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.flags import flags

REPO = Path(__file__).resolve().parents[1]


def clinc_dir() -> Path:
    env = os.environ.get("CLINC150_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data" / "clinc150")
    for c in candidates:
        if (c / "data_full.json").is_file():
            return c
    pytest.fail("CLINC150 not found: set CLINC150_DIR to the oos-eval JSON directory")


@pytest.fixture(scope="session")
def clinc_path() -> Path:
    return clinc_dir()


def write_clinc_json(
    directory: Path, splits: dict[str, list[list[str]]], name: str = "data_full.json"
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(splits))
    return path


# Eight intents from four domains, with near neighbours among them (balance vs transactions,
# timer vs alarm), so the small model has something to learn.
SMALL_INTENTS = [
    "balance",
    "transactions",
    "timer",
    "alarm",
    "weather",
    "translate",
    "book_flight",
    "greeting",
]


@pytest.fixture(scope="session")
def small_artifact(tmp_path_factory, clinc_path) -> Path:
    """A real classifier artifact: cpu preset, 8 intents, seeded, trained in this session."""
    from training import classifier

    out = tmp_path_factory.mktemp("artifact") / "clf"
    classifier.main(
        flags(
            preset="cpu",
            data_dir=clinc_path,
            variant="full",
            min_train_steps=0,
            output_dir=out,
            intents=",".join(SMALL_INTENTS),
            max_train_per_intent=40,
            num_train_epochs=3,
            learning_rate="2e-4",
            per_device_train_batch_size=16,
            seed=13,
            soup_runs=1,  # the soup has its own test; one run keeps the fixture quick
            evaluate_bf16=True,  # on any CPU (a few dozen texts even where emulated)
            disable_tqdm=True,
        )
    )
    return out


# Raw intents with a slot (duration, word), facts (result, spelled, outcome) and none
# (greeting), from four generated core intents.
GENERATOR_INTENTS = ["timer", "calculator", "spelling", "flip_coin", "greeting"]


@pytest.fixture(scope="session")
def small_generator(tmp_path_factory, clinc_path) -> Path:
    """A real generator artifact: cpu preset (BERT2BERT from MiniLM), 5 raw intents,
    seeded, trained in this session."""
    from training import generator

    out = tmp_path_factory.mktemp("artifact") / "gen"
    generator.main(
        flags(
            preset="cpu",
            data_dir=clinc_path,
            variant="full",
            min_train_steps=0,
            output_dir=out,
            intents=",".join(GENERATOR_INTENTS),
            max_train_per_intent=60,
            max_eval_per_intent=10,
            num_train_epochs=4,
            learning_rate="2e-4",
            per_device_train_batch_size=16,
            seed=13,
            latency_samples=5,
            disable_tqdm=True,
        )
    )
    return out


@pytest.fixture(scope="session")
def standin(tmp_path_factory):
    """A deterministic stand-in classifier (tests/standin_classifier.py) over real HTTP."""
    from tests.servers import free_port, running

    port = free_port()
    with running(
        ["tests.standin_classifier"], {}, tmp_path_factory.mktemp("standin"), port=port
    ) as svc:
        yield svc
