"""Build and run the project's images with podman on a machine with no image registry and no
Docker engine (this project's dev and CI machines), for tests/containers.

- the base image: a stand-in for python:3.11-slim-bookworm, debootstrapped from Debian's
  mirror (`--variant=minbase`, python3 + venv) and imported;
- the `pip` build context (docker/pip/README.md): this machine's pip settings (`pip config
  list`: its CA bundle, its local wheel folders, its constraints), copied into a folder that
  is mounted only while pip runs in a build;
- the images: `podman build --format docker` (HEALTHCHECK is a Docker-format field);
- compose: Debian's docker-compose against podman's Docker-compatible API socket;
- health checks: podman runs them from systemd timers, and these machines have no systemd,
  so `HealthChecks` runs `podman healthcheck run` for every running container (the image's
  own HEALTHCHECK command, on a schedule of ours).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "deploy" / "podman" / "containers.conf"
BASE_IMAGE = "localhost/parlance-base/python:3.11-slim-bookworm"
STANDINS = {
    "localhost/parlance-standin/redis:bookworm": "deploy/podman/redis.Containerfile",
    "localhost/parlance-standin/prometheus:bookworm": "deploy/podman/prometheus.Containerfile",
}
MIRROR = os.environ.get("PARLANCE_DEBIAN_MIRROR", "http://deb.debian.org/debian")


class PodmanError(RuntimeError):
    pass


def env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONF)}


def podman(*args: str, timeout: float = 1800, check: bool = True) -> str:
    r = subprocess.run(
        ["podman", *args], env=env(), capture_output=True, text=True, timeout=timeout
    )
    if check and r.returncode != 0:
        cmd = shlex.join(["podman", *args])
        raise PodmanError(f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return r.stdout


def why_unusable() -> str | None:
    """None when podman can run a container here, else the reason."""
    if not shutil.which("podman"):
        return "podman is not installed (apt-get install podman runc netavark aardvark-dns)"
    try:
        podman("info", timeout=120)
        if not image_exists(BASE_IMAGE):
            return None  # checked once the base image exists (ensure_base)
        podman("run", "--rm", "--network", "none", BASE_IMAGE, "true", timeout=120)
    except (PodmanError, subprocess.TimeoutExpired) as e:
        return f"podman cannot run containers here: {e}"
    return None


def image_exists(tag: str) -> bool:
    r = subprocess.run(["podman", "image", "exists", tag], env=env(), capture_output=True)
    return r.returncode == 0


def ensure_base() -> float:
    """The python:3.11-slim-bookworm stand-in; seconds spent (0 when it was there)."""
    if image_exists(BASE_IMAGE):
        return 0.0
    if not shutil.which("debootstrap"):
        raise PodmanError("debootstrap is not installed (apt-get install debootstrap)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        include = "python3,python3-venv,python-is-python3,ca-certificates"
        r = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={include}", "bookworm"]
            + [str(root), MIRROR],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if r.returncode != 0:
            raise PodmanError(f"debootstrap failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(
            ["podman", "import", "--change", 'CMD ["python3"]', "-", BASE_IMAGE],
            stdin=tar.stdout,
            env=env(),
            capture_output=True,
            text=True,
        )
        tar.wait()
        if imp.returncode != 0:
            raise PodmanError(f"podman import failed: {imp.stderr[-2000:]}")
    podman("run", "--rm", "--network", "none", BASE_IMAGE, "python", "-m", "venv", "--help")
    return time.perf_counter() - t0


def pip_settings() -> dict[str, str]:
    """This machine's effective pip settings, as `pip config list` prints them."""
    r = subprocess.run(
        ["python3", "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    )
    out = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        out[name] = value.strip().strip("'\"")
    return out


def pip_context(dest: Path) -> Path:
    """A `pip` build context holding this machine's pip settings, paths rewritten to
    /run/pip: the CA bundle, the local wheel folders (hard links where possible) and the
    constraints file. file:// indexes are left out (PyPI serves what they hold)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    settings = pip_settings()
    lines = ["[global]"]
    if cert := settings.get("cert"):
        shutil.copy(cert, dest / "ca.pem")
        lines.append("cert = /run/pip/ca.pem")
    links = []
    for i, folder in enumerate(settings.get("find-links", "").split()):
        src = Path(folder.removeprefix("file://"))
        if not src.is_dir():
            continue
        target = dest / f"find-links-{i}"
        target.mkdir()
        for f in src.iterdir():
            if f.is_file():
                try:
                    os.link(f, target / f.name)
                except OSError:
                    shutil.copy(f, target / f.name)
        links.append(f"/run/pip/{target.name}")
    if links:
        lines.append("find-links = " + " ".join(links))
    if constraint := settings.get("constraint"):
        shutil.copy(constraint, dest / "constraints.txt")
        lines.append("constraint = /run/pip/constraints.txt")
    for key in ("index-url", "default-timeout", "retries", "trusted-host"):
        if key in settings:
            lines.append(f"{key} = {settings[key]}")
    (dest / "pip.conf").write_text("\n".join(lines) + "\n")
    return dest


BUILD = ["build", "--format", "docker", "--network", "host"]  # HEALTHCHECK: Docker format


def build(target: str, tag: str, pip: Path, contexts: dict[str, Path] | None = None) -> float:
    """`podman build` of one docker/Dockerfile target from the stand-in base; seconds.
    `contexts`: further named build contexts (the Lambda classifier's `model`)."""
    t0 = time.perf_counter()
    args = ["--build-context", f"pip={pip}", "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}"]
    for name, path in (contexts or {}).items():
        args += ["--build-context", f"{name}={path}"]
    args += ["--build-arg", "TORCH_INDEX_URL="]
    podman(*BUILD, *args, "-f", "docker/Dockerfile", "--target", target, "-t", tag, str(REPO))
    return time.perf_counter() - t0


def build_standin(tag: str, containerfile: str) -> float:
    if image_exists(tag):
        return 0.0
    t0 = time.perf_counter()
    args = ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-f", containerfile, "-t", tag]
    podman(*BUILD, *args, str(REPO / "deploy" / "podman"))
    return time.perf_counter() - t0


def image_size_mb(tag: str) -> float:
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).strip()) / 1e6


def inspect(name: str) -> dict:
    return json.loads(podman("inspect", name))[0]


class HealthChecks(threading.Thread):
    """Runs every running container's HEALTHCHECK every `interval` seconds (what podman
    leaves to systemd timers)."""

    def __init__(self, interval: float = 2.0):
        super().__init__(daemon=True)
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                ids = podman("ps", "-q", "--filter", "status=running", timeout=30).split()
            except Exception:
                continue
            for cid in ids:  # an unhealthy answer is the container's state, not our error
                podman("healthcheck", "run", cid, timeout=30, check=False)

    def stop(self) -> None:
        self.stopped.set()


class ApiSocket:
    """`podman system service` on a unix socket, for compose clients (DOCKER_HOST)."""

    def __init__(self, path: Path):
        self.path = path
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{self.path}"],
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            if self.path.exists():
                break
            time.sleep(0.1)
        else:
            raise PodmanError("podman system service did not create its socket")
        return f"unix://{self.path}"

    def __exit__(self, *exc) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=30)
