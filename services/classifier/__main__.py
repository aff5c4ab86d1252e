"""python -m services.classifier --artifact DIR [--host H] [--port P] | serve"""

from __future__ import annotations

import os
import sys

from services.common.serve import parse_cli, run


def main(argv: list[str] | None = None) -> None:
    args = parse_cli(argv, description="Serve a classifier artifact",
                     artifact_env="CLASSIFIER_ARTIFACT")
    # CLI flags win over the environment; pydantic-settings reads the rest (CLASSIFIER_*).
    for flag, env in (("artifact", "CLASSIFIER_ARTIFACT"), ("host", "CLASSIFIER_HOST"),
                      ("port", "CLASSIFIER_PORT")):
        value = getattr(args, flag)
        if value is not None:
            os.environ[env] = str(value)
    from pydantic import ValidationError

    from services.classifier.app import create_app
    from services.classifier.config import ClassifierSettings

    try:
        settings = ClassifierSettings()
    except ValidationError as e:
        sys.exit(f"invalid classifier settings (flags or CLASSIFIER_* variables):\n{e}")
    run(lambda: create_app(settings), settings.host, settings.port, settings.log_level)


if __name__ == "__main__":
    main()
