"""AWS Lambda entry point of the gateway (container image target `gateway-lambda`):

    handler = services.gateway.lambda_handler.handler

Set CLASSIFIER_URL (the classifier Lambda's or endpoint's URL), GENERATOR_URL and REDIS_URL:
Lambda instances share nothing, so sessions (forms in progress) and rate-limit windows must
live in Redis (ElastiCache) to survive from one instance to the next; without REDIS_URL each
instance keeps its own and a warning says so.
"""

from __future__ import annotations

import logging
import os

from services.common.lambda_adapter import lambda_handler
from services.gateway.app import create_app

if not (os.environ.get("REDIS_URL") or os.environ.get("GATEWAY_REDIS_URL")):
    logging.getLogger("services.gateway").warning(
        "no REDIS_URL: sessions and rate limits are per Lambda instance"
    )

# The gateway loads no model; its readiness follows the classifier, which is not waited for.
handler = lambda_handler(create_app(), wait_ready=False)
