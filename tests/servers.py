"""Start real service processes (uvicorn on 127.0.0.1) for the tests, and stop them."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    def __init__(self, args: list[str], env: dict[str, str], port: int, log: Path):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self._log_file = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=REPO,
            env=full_env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def wait(self, path: str = "/healthz", status: int = 200, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"service exited with {self.proc.returncode}:\n" + self.log.read_text()[-3000:]
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + path, timeout=2).status_code == status:
                    return
            time.sleep(0.05)
        raise TimeoutError(
            f"{self.url}{path} not {status} after {timeout}s:\n" + self.log.read_text()[-3000:]
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


@contextlib.contextmanager
def running(
    args: list[str],
    env: dict[str, str],
    tmp: Path,
    port: int | None = None,
    ready_path: str = "/readyz",
):
    port = port or free_port()
    if "serve" not in args:  # SageMaker mode takes its port from SAGEMAKER_BIND_TO_PORT
        args = [*args, "--port", str(port)]
    svc = ServiceProcess(args, env, port, tmp / f"service-{port}.log")
    try:
        if ready_path:
            svc.wait(ready_path)
        yield svc
    finally:
        svc.stop()


@contextlib.contextmanager
def redis_server(tmp: Path):
    """A real redis-server (Debian package; `.ci/run` installs it) on a free port."""
    from services.local_stack import RedisProcess

    redis = RedisProcess(free_port(), tmp, persistent=False)
    redis.start()
    try:
        yield redis.url
    finally:
        redis.stop()


POSTGRES_ENV = "PARLANCE_TEST_POSTGRES_URL"


@contextlib.contextmanager
def postgres_database():
    """A fresh, empty database on a real PostgreSQL server: the one `.ci/run` starts from
    Debian's package ($PARLANCE_TEST_POSTGRES_URL, a role that may create databases), and
    the database is dropped afterwards. Without the variable the test is skipped here, but
    never on CI (`CI` set): there a missing server is a failure."""
    import os
    import uuid

    import pytest

    url = os.environ.get(POSTGRES_ENV)
    if not url:
        message = f"no PostgreSQL: {POSTGRES_ENV} is not set (.ci/run sets it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    import psycopg

    name = "parlance_test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def clients_posting(url: str, body, n: int = 8):
    """`n` threads posting `body(i, k)` to `url` in a loop until the block ends; yields the
    outcomes so far: a status code, "refused" (no connection was made, so nothing was sent)
    or the name of the error of a request that was sent and then lost."""
    results: list[int | str] = []
    stop = threading.Event()

    def client(i: int) -> None:
        k = 0
        while not stop.is_set():
            try:
                results.append(httpx.post(url, json=body(i, k), timeout=30).status_code)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                results.append("refused")
            except httpx.HTTPError as e:
                results.append(type(e).__name__)
            k += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    try:
        yield results
    finally:
        stop.set()
        for t in threads:
            t.join()
