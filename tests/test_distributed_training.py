"""Multi-process training as the paper preset runs it on a multi-GPU host (`torchrun
--nproc_per_node N -m training.classifier ...`), here with two CPU processes (gloo): both
ranks train, rank 0 alone writes one complete artifact, and the artifact serves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import SMALL_INTENTS
from tests.flags import flags
from tests.servers import REPO

pytestmark = pytest.mark.slow


def test_torchrun_two_processes_write_one_artifact(clinc_path, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun, "torchrun comes with torch"
    out = tmp_path / "clf"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "training.classifier",
            *flags(
                preset="cpu",
                data_dir=clinc_path,
                variant="full",
                min_train_steps=0,
                intents=",".join(SMALL_INTENTS[:4]),
                max_train_per_intent=24,
                num_train_epochs=2,
                per_device_train_batch_size=8,
                export_onnx=False,
                disable_tqdm=True,
                seed=7,
                soup_runs=1,
                use_cpu=True,  # without a GPU, accelerate needs this for multi-process CPU
                output_dir=out,
            ),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["processes"] == 2
    assert manifest["metrics"]["inscope_accuracy"] > 0.5  # it learned (4 intents + oos)
    assert r.stdout.count("artifact written to") + r.stderr.count("artifact written to") == 1

    from services.classifier.model import ClassifierModel

    model = ClassifierModel(str(out), "torch")
    (pred,) = model.predict_batch([("what is my checking account balance", 1)])
    assert pred.intent == "balance"
