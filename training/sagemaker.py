"""SageMaker's training contract for the trainer image (`train`).

    python -m training.sagemaker train

SageMaker runs the container with `train` after writing the job's hyper-parameters to
`/opt/ml/input/config/hyperparameters.json` (every value a string) and the data channels
under `/opt/ml/input/data/<channel>`; it sets `SM_MODEL_DIR` (`/opt/ml/model`, uploaded
as model.tar.gz when the job ends), `SM_CHANNEL_TRAINING` and `SM_INPUT_CONFIG_DIR`. This
entry point maps them onto the training CLIs: the hyper-parameter `model` picks
`classifier` (default) or `generator`; every other hyper-parameter becomes a `--flag value`;
the `training` channel, when present, is the CLINC150 directory.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger("training.sagemaker")


def train_argv(hyperparameters: dict, model_dir: str, data_dir: str | None) -> tuple[str, list]:
    hp = {k: str(v) for k, v in hyperparameters.items()}
    kind = hp.pop("model", "classifier")
    if kind not in ("classifier", "generator"):
        raise ValueError(
            f"hyper-parameter 'model' must be 'classifier' or 'generator', got {kind!r}"
        )
    argv = ["--output_dir", model_dir]
    if data_dir and "data_dir" not in hp:
        argv += ["--data_dir", data_dir]
    for key, value in hp.items():
        argv += [f"--{key}", value]
    return kind, argv


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["train"]:
        sys.exit("usage: python -m training.sagemaker train")
    config_dir = Path(os.environ.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config"))
    hp_file = config_dir / "hyperparameters.json"
    hyperparameters = json.loads(hp_file.read_text()) if hp_file.is_file() else {}
    model_dir = os.environ.get("SM_MODEL_DIR", "/opt/ml/model")
    data_dir = os.environ.get("SM_CHANNEL_TRAINING")
    if data_dir and not Path(data_dir).is_dir():
        data_dir = None
    kind, train_args = train_argv(hyperparameters, model_dir, data_dir)
    logging.basicConfig(level=logging.INFO)
    logger.info("SageMaker training: %s %s", kind, train_args)
    if kind == "classifier":
        from training import classifier as trainer
    else:
        from training import generator as trainer
    trainer.main(train_args)


if __name__ == "__main__":
    main()
