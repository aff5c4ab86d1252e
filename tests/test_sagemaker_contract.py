"""SageMaker's container contracts without AWS: `train` reads the SM_* variables and
hyperparameters.json and writes the artifact to SM_MODEL_DIR; `serve` is tested in the
service tests (`/ping`, `/invocations` on the SageMaker port)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.sagemaker import train_argv

REPO = Path(__file__).resolve().parents[1]


def test_hyperparameters_become_flags():
    kind, argv = train_argv(
        {"model": "generator", "num_train_epochs": 1, "intents": "timer"},
        "/opt/ml/model",
        "/opt/ml/input/data/training",
    )
    assert kind == "generator"
    assert argv == [
        "--output_dir",
        "/opt/ml/model",
        "--data_dir",
        "/opt/ml/input/data/training",
        "--num_train_epochs",
        "1",
        "--intents",
        "timer",
    ]
    assert train_argv({}, "/m", None) == ("classifier", ["--output_dir", "/m"])
    with pytest.raises(ValueError, match="'classifier' or 'generator'"):
        train_argv({"model": "gpt"}, "/m", None)


@pytest.mark.slow
def test_train_contract_writes_the_artifact_to_sm_model_dir(tmp_path, clinc_path):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(
        json.dumps(
            {
                "model": "generator",
                "variant": "full",
                "intents": "greeting,timer",
                "max_train_per_intent": "8",
                "max_eval_per_intent": "3",
                "num_train_epochs": "1",
                "latency_samples": "2",
                "disable_tqdm": "true",
                "min_train_steps": "0",
            }
        )
    )
    model_dir = tmp_path / "model"
    env = {
        **os.environ,
        "SM_INPUT_CONFIG_DIR": str(config),
        "SM_MODEL_DIR": str(model_dir),
        "SM_CHANNEL_TRAINING": str(clinc_path),
    }
    r = subprocess.run(
        [sys.executable, "-m", "training.sagemaker", "train"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["kind"] == "generator"
    assert manifest["data"]["source"].startswith(f"dir:{clinc_path}")
    assert (model_dir / "model").is_dir()
