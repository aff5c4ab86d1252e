"""AWS Lambda entry points for the services' ASGI apps (API Gateway HTTP API v2 and REST v1
events), through Mangum.

Mangum runs an app's lifespan around every invocation (Kludex/mangum#342): for a model
service that would load the model on each request. So the lifespan runs once, in the init
phase (the cold start), on an event loop that stays the thread's current loop; Mangum then
runs each request on that same loop with `lifespan="off"`, and the batcher task started at
init keeps serving between invocations (Lambda freezes the process, tasks included).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time

logger = logging.getLogger("services.lambda")


async def _until_ready(app, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not app.state.ready:
        if getattr(app.state, "load_failed", False):
            raise RuntimeError("the model failed to load (see the log above)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the model was not ready after {timeout_s:.0f} s")
        await asyncio.sleep(0.01)


def lambda_handler(app, *, wait_ready: bool, ready_timeout_s: float = 120.0):
    """A Lambda handler for `app`, with the app's lifespan entered now (init phase).

    wait_ready: block init until the model is loaded and warmed up, so the first request of
    a fresh instance is served, not answered 503 (Lambda bills init up to 10 s anyway)."""
    from mangum import Mangum

    t0 = time.monotonic()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # Mangum runs every request on the current loop
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    if wait_ready:
        loop.run_until_complete(_until_ready(app, ready_timeout_s))

    def _shutdown() -> None:  # Lambda sends SIGTERM before it retires an instance
        if not loop.is_closed():
            loop.run_until_complete(lifespan.__aexit__(None, None, None))

    atexit.register(_shutdown)
    logger.info("lambda init done in %.2f s", time.monotonic() - t0)
    return Mangum(app, lifespan="off")


def invoke_locally(handler_path: str, events: list[dict]) -> dict:
    """What Lambda does with a container image, minus AWS: import the handler module (the
    init phase, timed), then invoke it once per event (each timed). Meant to run in a fresh
    process (`python -m services.common.lambda_adapter`), so init is a real cold start."""
    import importlib
    import resource
    import sys
    import types

    module_name, _, attr = handler_path.partition(":")
    t0 = time.perf_counter()
    handler = getattr(importlib.import_module(module_name), attr or "handler")
    init_s = time.perf_counter() - t0
    context = types.SimpleNamespace(
        function_name="parlance-local",
        memory_limit_in_mb=2048,
        aws_request_id="local",
        get_remaining_time_in_millis=lambda: 30000,
    )
    results = []
    for event in events:
        t = time.perf_counter()
        response = handler(event, context)
        results.append({"ms": (time.perf_counter() - t) * 1000, "response": response})
    return {
        "init_s": init_s,
        "invocations": results,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_imported": "torch" in sys.modules,
    }


def main(argv: list[str] | None = None) -> None:
    """python -m services.common.lambda_adapter MODULE[:ATTR] EVENT.json [EVENT.json ...]
    [--repeat N]: prints the invoke_locally() result as JSON on stdout."""
    import argparse
    import json
    import sys
    from pathlib import Path

    p = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    p.add_argument("handler")
    p.add_argument("events", nargs="+", help="API Gateway event JSON files")
    p.add_argument("--repeat", type=int, default=1, help="invoke the event list N times")
    p.add_argument(
        "--output",
        default=None,
        help="write the JSON here (default: stdout, where the services' logs also go)",
    )
    args = p.parse_args(argv)
    events = [json.loads(Path(e).read_text()) for e in args.events] * args.repeat
    result = json.dumps(invoke_locally(args.handler, events))
    if args.output:
        Path(args.output).write_text(result)
    else:
        sys.stdout.write(result + "\n")


if __name__ == "__main__":
    main()
