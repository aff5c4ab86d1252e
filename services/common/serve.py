"""Command-line entry points shared by the services, including SageMaker's `serve`.

python -m services.classifier --artifact DIR --host H --port P
python -m services.classifier serve     # SageMaker: port 8080 (or SAGEMAKER_BIND_TO_PORT),
                                        # model from /opt/ml/model
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

SAGEMAKER_MODEL_DIR = "/opt/ml/model"


def parse_cli(
    argv: list[str] | None, *, description: str, artifact_env: str | None
) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "mode",
        nargs="?",
        choices=["serve"],
        default=None,
        help="'serve': run under the SageMaker inference contract",
    )
    if artifact_env:
        p.add_argument(
            "--artifact", default=None, help=f"artifact directory (default ${artifact_env})"
        )
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    args = p.parse_args(argv)
    if args.mode == "serve":
        args.host = args.host or "0.0.0.0"  # noqa: S104 - inside the container, by contract
        args.port = args.port or int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
        if artifact_env and not args.artifact:
            args.artifact = os.environ.get(artifact_env) or SAGEMAKER_MODEL_DIR
    return args


def run(app_factory: Callable, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    # SageMaker sends SIGTERM, then SIGKILL 30 s later: uvicorn drains on SIGTERM.
    uvicorn.run(
        app_factory(),
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=20,
        log_config=None,
    )  # keep our JSON logging (services.common.logging)


def service_main(
    argv: list[str] | None,
    *,
    description: str,
    env_prefix: str,
    app_module: str,
    settings_class: str,
    artifact: bool = True,
) -> None:
    """The `python -m services.<name>` entry point: CLI flags (or SageMaker `serve`) become
    `<PREFIX>_ARTIFACT/HOST/PORT` variables, pydantic-settings reads the rest, and invalid
    settings exit with a readable message instead of a traceback. Modules are imported after
    the flags are parsed, so `--help` is instant."""
    import importlib
    import sys

    args = parse_cli(
        argv, description=description, artifact_env=f"{env_prefix}_ARTIFACT" if artifact else None
    )
    for flag in ("artifact", "host", "port"):
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[f"{env_prefix}_{flag.upper()}"] = str(value)
    from pydantic import ValidationError

    module = importlib.import_module(app_module)
    settings_cls = getattr(
        importlib.import_module(settings_class.rsplit(".", 1)[0]), settings_class.rsplit(".", 1)[1]
    )
    try:
        settings = settings_cls()
    except ValidationError as e:
        sys.exit(f"invalid {env_prefix.lower()} settings (flags or {env_prefix}_* variables):\n{e}")
    run(lambda: module.create_app(settings), settings.host, settings.port, settings.log_level)
