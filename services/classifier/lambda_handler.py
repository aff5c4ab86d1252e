"""AWS Lambda entry point of the classifier (container image target `classifier-lambda`):

    handler = services.classifier.lambda_handler.handler

The artifact is baked into the image at /opt/ml/model (or CLASSIFIER_ARTIFACT). Defaults
differ from the long-running service where Lambda's billing says so: the int8 ONNX model
(used only when its recorded test accuracy is within CLASSIFIER_INT8_MAX_DROP of fp32, else
fp32 with a warning), and ONNX Runtime threads that sleep instead of spinning between
requests (idle spinning is billed CPU). Any CLASSIFIER_* variable still overrides them.
"""

from __future__ import annotations

import os

from services.classifier.app import create_app
from services.classifier.config import ClassifierSettings
from services.common.lambda_adapter import lambda_handler

LAMBDA_DEFAULTS = {"artifact": "/opt/ml/model", "backend": "auto", "ort_spinning": False}


def lambda_settings() -> ClassifierSettings:
    unset = {
        k: v for k, v in LAMBDA_DEFAULTS.items() if f"CLASSIFIER_{k.upper()}" not in os.environ
    }
    return ClassifierSettings(**unset)


handler = lambda_handler(create_app(lambda_settings()), wait_ready=True)
