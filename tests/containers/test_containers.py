"""The real images, built here with podman from docker/Dockerfile on a stand-in base image,
and the compose stack run from them: `make test-containers` (tests/containers/podman.py
says how, and why a machine without systemd needs a health-check runner of ours).

Timings and image sizes go to runs/containers.json (docs/deploy.md quotes one run)."""

from __future__ import annotations

import json
import re
import subprocess
import time

import httpx
import pytest

from tests.conftest import GENERATOR_INTENTS, SMALL_INTENTS, clinc_dir
from tests.containers import podman as pm
from tests.flags import flags
from tests.servers import clients_posting, free_port
from tests.test_dashboard_prometheus import dashboard_traffic, panel_queries, query
from tests.test_gateway_dialogue import Conversation
from tests.test_gateway_shutdown import shutdown_line
from tests.test_lambda import body_of

pytestmark = pytest.mark.containers
REPORT: dict = {"built_s": {}, "size_mb": {}}
PROJECT = "parlance-ci"
IMAGES = {
    "classifier": "localhost/parlance-classifier:latest",
    "generator": "localhost/parlance-generator:latest",
    "gateway": "localhost/parlance-gateway:latest",
    "trainer": "localhost/parlance-trainer:latest",
    "gateway-lambda": "localhost/parlance-gateway-lambda:latest",
}
TRAINING_PACKAGES = ["peft", "datasets", "sklearn", "accelerate", "matplotlib", "seqeval"]


def save_report() -> None:
    out = pm.REPO / "runs" / "containers.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(REPORT, indent=2) + "\n")


@pytest.fixture(scope="session")
def pip_context(tmp_path_factory):
    if reason := pm.why_unusable():
        pytest.fail(reason)  # never a silent pass: CI must say why the images were not run
    REPORT["base_image_s"] = round(pm.ensure_base(), 1)
    if reason := pm.why_unusable():
        pytest.fail(reason)
    return pm.pip_context(tmp_path_factory.mktemp("pip") / "ctx")


@pytest.fixture(scope="session")
def images(pip_context):
    pip = pip_context
    for target, tag in IMAGES.items():
        REPORT["built_s"][target] = round(pm.build(target, tag, pip), 1)
        REPORT["size_mb"][target] = round(pm.image_size_mb(tag))
    for tag, containerfile in pm.STANDINS.items():
        REPORT["built_s"][tag] = round(pm.build_standin(tag, containerfile), 1)
    REPORT["size_mb"]["base"] = round(pm.image_size_mb(pm.BASE_IMAGE))
    save_report()
    return IMAGES


def run_in(image: str, code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", "run", "--rm", "--network", "none", "--entrypoint", "python", *args]
        + [image, "-c", code],
        env=pm.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_serving_images_run_as_non_root_without_training_packages(images):
    probe = (
        "import importlib.util, json, os; "
        f"print(json.dumps({{'uid': os.getuid(), 'present': [m for m in {TRAINING_PACKAGES!r}"
        " + ['torch'] if importlib.util.find_spec(m)]}))"
    )
    seen = {}
    for name in ("classifier", "generator", "gateway", "trainer"):
        r = run_in(images[name], probe, "--read-only")
        assert r.returncode == 0, r.stderr
        seen[name] = json.loads(r.stdout)
        assert seen[name]["uid"] == 10001, name
    assert seen["classifier"]["present"] == ["torch"] and seen["generator"]["present"] == ["torch"]
    assert seen["gateway"]["present"] == []
    assert set(seen["trainer"]["present"]) == {*TRAINING_PACKAGES, "torch"}
    # the pip context was mounted for the builds only: no trace of it in any image
    for name, tag in images.items():
        history = pm.podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", tag)
        assert "/run/pip" not in history.replace("target=/run/pip", ""), name
        r = run_in(tag, "import os; print(os.path.exists('/run/pip/pip.conf'))")
        assert r.stdout.strip() == "False", name


@pytest.fixture(scope="session")
def models_volume(images):
    """Small real artifacts trained by the trainer image (the recipes of tests/conftest.py)
    into the compose project's `models` volume."""
    volume = f"{PROJECT}_models"
    pm.podman("volume", "rm", "-f", volume, check=False)
    pm.podman(
        "volume",
        "create",
        "--label",
        f"com.docker.compose.project={PROJECT}",
        "--label",
        "com.docker.compose.volume=models",
        volume,
    )
    common = dict(preset="cpu", data_dir="/data/clinc150", variant="full", min_train_steps=0)
    common |= dict(learning_rate="2e-4", per_device_train_batch_size=16, seed=13)
    clf = flags(**common, output_dir="/opt/ml/model/classifier", disable_tqdm=True)
    clf += flags(intents=",".join(SMALL_INTENTS), max_train_per_intent=40, num_train_epochs=3)
    gen = flags(**common, output_dir="/opt/ml/model/generator", disable_tqdm=True)
    gen += flags(intents=",".join(GENERATOR_INTENTS), max_train_per_intent=60)
    gen += flags(max_eval_per_intent=10, num_train_epochs=4, latency_samples=5)
    script = (
        f"python -m training.classifier {' '.join(clf)}"
        f" && python -m training.generator {' '.join(gen)}"
    )
    t0 = time.perf_counter()
    pm.podman(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{volume}:/opt/ml/model",
        "-v",
        f"{clinc_dir()}:/data/clinc150:ro",
        "--entrypoint",
        "sh",
        images["trainer"],
        "-c",
        script,
        timeout=1800,
    )
    REPORT["trainer_small_artifacts_s"] = round(time.perf_counter() - t0, 1)
    save_report()
    yield volume
    pm.podman("volume", "rm", "-f", volume, check=False)


def compose(sock: str, *args: str, timeout: float = 900, **extra: str):
    return subprocess.run(
        ["docker-compose", "-p", PROJECT, "-f", "docker-compose.yml"]
        + ["-f", "deploy/podman/compose.standins.yml", *args],
        cwd=pm.REPO,
        env={**pm.env(), "DOCKER_HOST": sock, "CLINC150_DIR": str(clinc_dir()), **extra},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


SERVICES = ["trainer", "classifier", "generator", "gateway", "redis", "prometheus"]


@pytest.fixture(scope="session")
def stack(models_volume, tmp_path_factory):
    ports = {"gateway": free_port(), "prometheus": free_port()}
    publish = {
        "GATEWAY_PUBLISH": f"127.0.0.1:{ports['gateway']}",
        "PROMETHEUS_PUBLISH": f"127.0.0.1:{ports['prometheus']}",
        # every test client shares one address: the default 120/minute would refuse the
        # SIGTERM test's turns before the drain it is there to watch
        "GATEWAY_RATE_LIMIT": "",
    }
    sock = tmp_path_factory.mktemp("api") / "podman.sock"
    checks = pm.HealthChecks()
    checks.start()
    with pm.ApiSocket(sock) as host:
        t0 = time.perf_counter()
        up = compose(host, "up", "-d", "--no-build", *SERVICES, **publish)
        REPORT["stack_up_s"] = round(time.perf_counter() - t0, 1)
        save_report()
        try:
            assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
            # `up -d` waits for what the gateway depends on, not for the gateway itself
            wait_healthy(container("gateway"))
            REPORT["stack_healthy_s"] = round(time.perf_counter() - t0, 1)
            save_report()
            yield {
                "gateway": f"http://127.0.0.1:{ports['gateway']}",
                "prometheus": f"http://127.0.0.1:{ports['prometheus']}",
                "compose": lambda *a, **kw: compose(host, *a, **publish, **kw),
            }
        finally:
            logs = compose(host, "logs", "--no-color", "--tail", "40", **publish)
            (pm.REPO / "runs").mkdir(exist_ok=True)
            (pm.REPO / "runs" / "containers-stack.log").write_text(logs.stdout + logs.stderr)
            down = compose(host, "down", "-v", "--remove-orphans", **publish)
            checks.stop()
            assert down.returncode == 0, down.stderr[-3000:]
            left = pm.podman("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}")
            assert len(left.strip().splitlines()) <= 1, left  # only the header line


def container(service: str) -> str:
    return f"{PROJECT}_{service}_1"


def moment(podman_time: str) -> tuple[str, str, str]:
    """A podman timestamp ("2026-12-07T01:20:00.12345Z" or "2026-12-07 01:20:00.12345
    +0000 UTC"; its fraction drops trailing zeros) as a tuple that orders correctly."""
    m = re.match(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?", podman_time)
    assert m, podman_time
    return m[1], m[2], (m[3] or "").ljust(9, "0")


def test_services_become_healthy_in_order(stack):
    started = {}
    for s in ("classifier", "generator", "gateway"):
        info = pm.inspect(container(s))
        assert info["State"]["Health"]["Status"] == "healthy", (s, info["State"])
        assert info["Config"]["User"] == "10001"
        assert info["HostConfig"]["ReadonlyRootfs"] is True, s
        started[s] = moment(info["State"]["StartedAt"])
    trainer = pm.inspect(container("trainer"))["State"]
    assert trainer["Status"] == "exited" and trainer["ExitCode"] == 0
    # the model services start once the trainer has finished, the gateway once both are
    # healthy and Redis runs
    finished = moment(trainer["FinishedAt"])
    assert started["classifier"] > finished and started["generator"] > finished
    assert started["gateway"] > started["classifier"] and started["gateway"] > started["generator"]
    redis = pm.inspect(container("redis"))["State"]
    assert redis["Health"]["Status"] == "healthy", redis
    assert started["gateway"] > moment(redis["StartedAt"])


def test_a_conversation_fills_a_form_and_gets_generated_replies(stack):
    c = Conversation(stack["gateway"])
    r = c.say("start a timer for 10 minutes")
    assert r["intent"]["raw"] == "timer" and r["source"] == "generator"
    assert "10 minutes" in r["reply"]
    r = c.say("book a flight from boston to tokyo")
    assert r["state"]["active_form"] == "book_flight"
    assert r["state"]["slots"] == {"origin": "Boston", "destination": "Tokyo"}
    assert "what day" in r["reply"].lower()
    r = c.say("next friday")
    assert "shall i book it" in r["reply"].lower() and "Boston" in r["reply"]
    r = c.say("yes")
    assert "is booked" in r["reply"] and r["state"]["active_form"] is None
    # the session lives in the Redis container: a gateway restart keeps it
    c2 = Conversation(stack["gateway"])
    c2.say("book a flight from boston to tokyo")
    assert stack["compose"]("restart", "gateway").returncode == 0
    wait_healthy(container("gateway"))
    assert "shall i book it" in c2.say("next friday")["reply"].lower()


def wait_healthy(name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pm.inspect(name)["State"].get("Health", {}).get("Status") == "healthy":
            return
        time.sleep(1)
    raise AssertionError(f"{name} not healthy after {timeout} s")


def test_prometheus_scrapes_all_three_and_the_dashboard_has_data(stack):
    dashboard_traffic(stack["gateway"])
    prom = stack["prometheus"]
    deadline = time.monotonic() + 60
    while True:
        up = {s["metric"]["job"]: s["value"][1] for s in query(prom, "up")}
        empty = [title for title, expr in panel_queries() if not query(prom, expr)]
        done = up == {"classifier": "1", "generator": "1", "gateway": "1"} and not empty
        if done or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert up == {"classifier": "1", "generator": "1", "gateway": "1"}
    assert not empty, f"panels without data: {empty}"


def chat_turns_handled(url: str) -> int:
    """/v1/chat requests the gateway has answered so far, from its own metrics (the stack
    has no keys and no rate limit, so each was a turn it took on)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return round(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.endswith("_http_requests_total")
            and sample.labels.get("route") == "/v1/chat"
        )
    )


def shutdown_ledger(name: str, unit: str = "turns") -> dict:
    """A service's last shutdown line: what it took on and what it answered."""
    r = subprocess.run(
        ["podman", "logs", name], env=pm.env(), capture_output=True, text=True, timeout=60
    )
    return shutdown_line(r.stdout + r.stderr, unit)


def stop_under_load(name: str, url: str, body, unit: str, before: int = 0) -> tuple[dict, dict]:
    """`podman stop` (SIGTERM, then SIGKILL after the grace period) of container `name` while
    8 clients post to `url`: every request it took on is answered and reaches its client,
    and it exits 0 within the grace period. A connection the kernel accepted but the service
    had not read a request from when it closed its socket is reset unread: the client sees a
    disconnect for a request that never started (counted, reported, docs/deploy.md).
    `before`: what the service had taken on before. Returns (figures, container state)."""
    with clients_posting(url, body) as results:
        time.sleep(3)
        t0 = time.perf_counter()
        pm.podman("stop", "--time", "30", name)
        stop_s = round(time.perf_counter() - t0, 2)
    state = pm.inspect(name)["State"]
    ledger = shutdown_ledger(name, unit)
    taken_on = ledger[f"{unit}_started"] - before
    unanswered_sends = [r for r in results if r not in (200, "refused")]
    figures = {
        "stop_s": stop_s,
        "answered": results.count(200),
        "taken_on": taken_on,
        "lost": ledger[f"{unit}_started"] - ledger[f"{unit}_answered"],
        "reset_unread": len(unanswered_sends),
    }
    assert results.count(200) > 10, results
    assert figures["lost"] == 0, ledger  # none dropped
    assert results.count(200) == taken_on, (results, taken_on)  # and each reached its client
    # the rest were sent but never read: only at the moment the socket closed
    assert set(unanswered_sends) <= {"RemoteProtocolError", "ReadError"}, unanswered_sends
    assert len(unanswered_sends) <= 8, unanswered_sends
    assert state["ExitCode"] == 0, state
    assert stop_s < 30
    return figures, state


def test_sigterm_drains_in_flight_turns(stack):
    """The gateway of the running stack, stopped with turns in flight (stop_under_load),
    then started again."""
    url = stack["gateway"]
    figures, _ = stop_under_load(
        container("gateway"),
        f"{url}/v1/chat",
        lambda i, k: {"session_id": f"t{i}-{k}", "text": "start a timer for 2 minutes"},
        "turns",
        before=chat_turns_handled(url),
    )
    REPORT["gateway_stop_s"] = figures["stop_s"]
    REPORT["sigterm"] = figures
    save_report()
    assert stack["compose"]("start", "gateway").returncode == 0
    wait_healthy(container("gateway"))


MODEL_REQUESTS = {
    "classifier": ("/v1/classify", lambda i, k: {"texts": [f"set a timer for {k % 50} minutes"]}),
    "generator": (
        "/v1/generate",
        lambda i, k: {
            "intent": "timers_and_alarms",
            "text": f"set a timer for {k % 50} minutes",
            "slots": {"duration": f"{k % 50} minutes"},
        },
    ),
}


@pytest.mark.parametrize("service", ["classifier", "generator"])
def test_a_model_service_image_drains_its_requests_on_sigterm(images, models_volume, service):
    """Each model image, run on its own (as the stack runs it: read-only, the models volume)
    with its port published, stopped under load (stop_under_load)."""
    name, port = f"{PROJECT}-drain-{service}", free_port()
    pm.podman("rm", "-f", name, check=False)
    pm.podman(
        "run",
        "-d",
        "--name",
        name,
        "--read-only",
        "--tmpfs",
        "/tmp",
        "-p",
        f"127.0.0.1:{port}:8080",
        "-v",
        f"{models_volume}:/opt/ml/model:ro",
        "-e",
        f"{service.upper()}_ARTIFACT=/opt/ml/model/{service}",
        images[service],
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while not ready(url):
            assert time.monotonic() < deadline, pm.podman("logs", name)[-3000:]
            time.sleep(1)
        path, body = MODEL_REQUESTS[service]
        figures, _ = stop_under_load(name, url + path, body, "requests")
        REPORT.setdefault("sigterm_model_services", {})[service] = figures
        save_report()
    finally:
        pm.podman("rm", "-f", name, check=False)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def run_handler(image: str, handler: str, events: list[str], env: dict, out_dir) -> dict:
    """No Runtime Interface Emulator in any registry here: the image's own Python runs the
    handler on the events tests/test_lambda.py uses (services.common.lambda_adapter), as
    Lambda runs it: read-only, an unprivileged user, twice (a cold and a warm round)."""
    out_dir.chmod(0o777)
    r = subprocess.run(
        ["podman", "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp"]
        + ["-v", f"{pm.REPO / 'tests' / 'data' / 'lambda'}:/events:ro"]
        + ["-v", f"{out_dir}:/out", "--entrypoint", "python"]
        + [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        + [image, "-m", "services.common.lambda_adapter", handler]
        + [f"/events/{e}" for e in events]
        + ["--repeat", "2", "--output", "/out/r.json"],
        env=pm.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads((out_dir / "r.json").read_text())
    assert out["torch_imported"] is False  # neither Lambda image ships torch
    probe = run_in(image, "import awslambdaric, mangum, os; print(os.getuid())")
    assert probe.stdout.strip() == "10001", probe.stderr
    return out


def test_the_gateway_lambda_image_answers_the_test_events(images, standin, tmp_path):
    env = {
        "CLASSIFIER_URL": standin.url,
        "GENERATOR_URL": "http://127.0.0.1:9",
        "GATEWAY_API_KEYS": "lambda-test-key",
        "GATEWAY_RATE_LIMIT": "",
    }
    events = ["chat.json", "chat_no_key.json", "labels.json", "healthz.json"]
    out = run_handler(
        images["gateway-lambda"], "services.gateway.lambda_handler", events, env, tmp_path
    )
    calls = [c["response"] for c in out["invocations"]]
    chat, no_key, labels, health = calls[:4]
    assert chat["statusCode"] == 200, chat
    assert body_of(chat)["state"]["active_form"] == "money_transfer"
    assert no_key["statusCode"] == 401
    assert labels["statusCode"] == 200 and "core_intents" in json.dumps(body_of(labels))
    assert health["statusCode"] == 200
    assert [c["statusCode"] for c in calls[4:]] == [200, 401, 200, 200]  # the warm round
    assert "lambda-test-key" not in json.dumps(out)


def test_the_classifier_lambda_image_answers_the_test_events(pip_context, models_volume, tmp_path):
    """The classifier's Lambda image, built with the small artifact of the models volume as
    its `model` build context (Lambda has no volumes: the model is baked in)."""
    tmp_path.chmod(0o777)
    copy_out = f"run --rm --network none -v {models_volume}:/m:ro -v {tmp_path}:/out"
    copy_out += f" --entrypoint cp {IMAGES['gateway']} -r /m/classifier /out/model"
    pm.podman(*copy_out.split())
    tag = "localhost/parlance-classifier-lambda:latest"
    REPORT["built_s"]["classifier-lambda"] = round(
        pm.build("classifier-lambda", tag, pip_context, {"model": tmp_path / "model"}), 1
    )
    REPORT["size_mb"]["classifier-lambda"] = round(pm.image_size_mb(tag))
    save_report()
    events = ["classify.json", "classify_base64.json", "classify_invalid.json", "healthz.json"]
    runs = tmp_path / "runs"
    runs.mkdir()
    out = run_handler(tag, "services.classifier.lambda_handler", events, {}, runs)
    calls = [c["response"] for c in out["invocations"]]
    ok, b64, invalid, health = calls[:4]
    assert ok["statusCode"] == 200, ok
    predictions = body_of(ok)["predictions"]
    assert [p["intent"] for p in predictions] == ["balance", "timer"]
    assert body_of(b64)["predictions"] == predictions  # the same request, base64-encoded
    assert invalid["statusCode"] == 422 and "texts" in json.dumps(body_of(invalid))
    assert health["statusCode"] == 200
    assert [c["statusCode"] for c in calls[4:]] == [200, 200, 422, 200]
    assert body_of(calls[4])["predictions"] == predictions  # the warm instance agrees
