"""Run the whole stack (classifier, generator, gateway) as local processes: what `make demo`
starts once its artifacts exist, and what the soak and fault tools drive.

    python -m services.local_stack --classifier-artifact DIR --generator-artifact DIR
                                   [--port 8000] [--classifier-port 8001]
                                   [--generator-port 8002] [--log-dir DIR]

The model services start together, the gateway once both are ready; the chat page URL is
printed when the gateway is ready. Ctrl-C (or SIGTERM/SIGHUP) stops the gateway first, then
the model services, each drained by uvicorn. If any process dies, the others are stopped and
the exit status is 1 with the end of its log, so a broken stack never half-runs.

The children run in their own sessions so that a terminal's Ctrl-C reaches this supervisor
only and the shutdown order is ours, not the race of three processes each handling SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StackError(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    module: str
    port: int
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    def url(self, host: str) -> str:
        return f"http://{host}:{self.port}"

    def start(self, host: str, log_dir: Path) -> None:
        self.log_path = log_dir / f"{self.name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    self.module,
                    *self.args,
                    "--host",
                    host,
                    "--port",
                    str(self.port),
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def log_tail(self, chars: int = 2500) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # uvicorn drains in-flight requests on SIGTERM
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_ready(children: list[Child], host: str, timeout: float) -> None:
    """Poll each child's /readyz until all answer 200; fail fast if one exits."""
    pending = {c.name: c for c in children}
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while pending:
            for name, child in list(pending.items()):
                if child.proc.poll() is not None:
                    raise StackError(
                        f"{name} exited with status {child.proc.returncode} "
                        f"while starting; end of {child.log_path}:\n"
                        f"{child.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(child.url(host) + "/readyz").status_code == 200:
                        del pending[name]
            if time.monotonic() > deadline:
                raise StackError(
                    f"not ready after {timeout:.0f} s: {sorted(pending)}; logs in "
                    f"{children[0].log_path.parent}"
                )
            time.sleep(0.1)


class RedisProcess:
    """A local redis-server for the gateway's sessions. `persistent`: append-only file
    (fsync every write) in DATA_DIR, so stopping and starting it loses nothing."""

    def __init__(self, port: int, data_dir: Path, persistent: bool = True):
        self.port = port
        self.data_dir = data_dir
        self.persistent = persistent
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        import shutil

        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis-server not found (apt-get install redis-server)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir.resolve()),
                "--save",
                "",
                *(
                    ["--appendonly", "yes", "--appendfsync", "always"]
                    if self.persistent
                    else ["--appendonly", "no"]
                ),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not port_in_use("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise StackError("redis-server did not start")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Stack:
    def __init__(
        self,
        classifier_artifact: str,
        generator_artifact: str | None,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        classifier_port: int = 8001,
        generator_port: int = 8002,
        log_dir: str | Path = "artifacts/logs",
        gateway_env: dict[str, str] | None = None,
        redis_port: int | None = None,
        classifier_env: dict[str, str] | None = None,
        generator_env: dict[str, str] | None = None,
        actions_port: int | None = None,
    ):
        """`actions_port`: also run the example back-end of the bundled packs' webhook
        actions (examples/action_server) there, with a fresh secret shared with the
        gateway (a demo without the owner's own back-end)."""
        self.host = host
        self.actions = None
        if actions_port:
            import secrets

            secret = secrets.token_hex(32)
            self.actions = Child(
                "actions",
                "examples.action_server",
                actions_port,
                {"PARLANCE_ACTION_SECRET": secret},
            )
            url = self.actions.url(host)
            gateway_env = {
                "PARLANCE_ACTION_SECRET": secret,
                "PARLANCE_ACTIONS_URL": url,
                "BIKE_SHOP_ACTIONS_URL": url,
                **(gateway_env or {}),
            }
        self.log_dir = Path(log_dir)
        self.redis = RedisProcess(redis_port, self.log_dir / "redis") if redis_port else None
        if self.redis:
            gateway_env = {"REDIS_URL": self.redis.url, **(gateway_env or {})}
        # All on one host: ONNX Runtime's idle-spinning threads would take the CPU the
        # gateway and the generator need (docs/gateway.md), so they sleep by default here.
        self.classifier = Child(
            "classifier",
            "services.classifier",
            classifier_port,
            {"CLASSIFIER_ORT_SPINNING": "false", **(classifier_env or {})},
            ["--artifact", str(classifier_artifact)],
        )
        self.generator = Child(
            "generator",
            "services.generator",
            generator_port,
            generator_env or {},
            ["--artifact", str(generator_artifact)],
        )
        self.gateway = Child(
            "gateway",
            "services.gateway",
            port,
            {
                "CLASSIFIER_URL": self.classifier.url(host),
                "GENERATOR_URL": self.generator.url(host),
                **(gateway_env or {}),
            },
        )
        # Without a generator artifact (a pack with no generated core intents) the gateway
        # answers every intent from its templates.
        self.children = [
            self.classifier,
            *([self.generator] if generator_artifact else []),
            *([self.actions] if self.actions else []),
            self.gateway,
        ]

    @property
    def url(self) -> str:
        return self.gateway.url(self.host) + "/"

    def start(self, timeout: float = 180.0) -> float:
        """Start everything and wait for readiness; returns the seconds it took."""
        busy = [f"{c.name} port {c.port}" for c in self.children if port_in_use(self.host, c.port)]
        if busy:
            raise StackError(
                f"already in use: {', '.join(busy)} (another stack running? "
                "choose other ports with --port/--classifier-port/--generator-port)"
            )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        if self.redis:
            self.redis.start()
        models = [c for c in self.children if c is not self.gateway]
        for child in models:
            child.start(self.host, self.log_dir)
        wait_ready(models, self.host, timeout)
        self.gateway.start(self.host, self.log_dir)
        wait_ready([self.gateway], self.host, max(10.0, timeout - (time.monotonic() - t0)))
        return time.monotonic() - t0

    def dead(self) -> Child | None:
        return next((c for c in self.children if c.proc and c.proc.poll() is not None), None)

    def stop(self, timeout: float = 25.0) -> None:
        # The gateway first, so no turn is accepted that the models are no longer there for.
        self.gateway.stop(timeout)
        self.classifier.stop(timeout)
        self.generator.stop(timeout)
        if self.actions:
            self.actions.stop(timeout)
        if self.redis:
            self.redis.stop()

    # -- fault injection (benchmarks/reliability.py, tests/test_load_and_faults.py) ------
    def kill(self, child: Child) -> None:
        """SIGKILL: a crash, no draining."""
        child.proc.kill()
        child.proc.wait()

    def restart(self, child: Child, timeout: float = 120.0) -> float:
        """Start a killed child again; returns the seconds until it was ready."""
        t0 = time.monotonic()
        child.start(self.host, self.log_dir)
        wait_ready([child], self.host, timeout)
        return time.monotonic() - t0

    def pause(self, child: Child) -> None:
        """SIGSTOP: the process stalls (accepts connections, answers nothing)."""
        child.proc.send_signal(signal.SIGSTOP)

    def resume(self, child: Child) -> None:
        child.proc.send_signal(signal.SIGCONT)


def serve_forever(stack: Stack, *, banner: bool = True) -> int:
    """Start, print where to go, block until a stop signal or a dead child; always clean up."""
    # The readiness polls go through httpx, which logs every request at INFO: dozens of
    # "GET /readyz 503" lines in the user's terminal while the models load.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stopping = {"signal": None}

    def on_signal(signum, _frame):
        stopping["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        names = ", ".join(f"{c.name} (:{c.port})" for c in stack.children)
        print(f"starting {names}; logs in {stack.log_dir}/", flush=True)
        took = stack.start()
        if banner:
            print(
                f"\nParlance is up (services ready in {took:.1f} s)\n"
                f"  chat page   {stack.url}\n"
                f"  chat API    POST {stack.url}v1/chat   (docs/contract.md)\n"
                f"  metrics     "
                + ", ".join(f"{c.url(stack.host)}/metrics" for c in stack.children)
                + "\n"
                "Ctrl-C stops everything.",
                flush=True,
            )
        while stopping["signal"] is None:
            if (child := stack.dead()) is not None:
                print(
                    f"{child.name} exited with status {child.proc.returncode}; stopping the "
                    f"stack. End of {child.log_path}:\n{child.log_tail()}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.2)
        print("\nstopping: the gateway, then the model services ...", flush=True)
        return 0
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        # Stop signals during the shutdown itself must not leave children behind.
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        stack.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        if stopping["signal"] is not None:
            print("stopped.", flush=True)


def wants_example_actions(pack) -> bool:
    """A pack with webhook actions and no back-end configured: the demo runs the example."""
    return bool(pack.webhooks) and not os.environ.get("PARLANCE_ACTION_SECRET")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classifier-artifact", required=True)
    p.add_argument("--generator-artifact", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="gateway (chat page) port")
    p.add_argument("--classifier-port", type=int, default=8001)
    p.add_argument("--generator-port", type=int, default=8002)
    p.add_argument("--log-dir", default="artifacts/logs")
    p.add_argument(
        "--redis-port",
        type=int,
        default=None,
        help="also run redis-server on this port for the gateway's sessions "
        "(persistent, in LOG_DIR/redis)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stack = Stack(
        args.classifier_artifact,
        args.generator_artifact,
        host=args.host,
        port=args.port,
        classifier_port=args.classifier_port,
        generator_port=args.generator_port,
        log_dir=args.log_dir,
        redis_port=args.redis_port,
    )
    return serve_forever(stack)


if __name__ == "__main__":
    sys.exit(main())
