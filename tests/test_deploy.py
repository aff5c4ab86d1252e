"""Deployment files, checked statically: the Dockerfile with hadolint, the compose files
with Debian's docker-compose (`config -q`), and the Grafana dashboard against the metrics
the services really export. (No Docker engine runs here; the stack itself is tested as
processes elsewhere.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    path = shutil.which(name) or (
        str(REPO / ".venv" / "bin" / name) if (REPO / ".venv" / "bin" / name).exists() else None
    )
    if path is None:
        pytest.fail(f"{name} not found (make install / .ci/run install it)")
    return path


def healthcheck_of(dockerfile: str, target: str) -> str:
    """The HEALTHCHECK a target stage ends up with: its own, else its base stage's."""
    stages = {}
    for block in re.split(r"^(?=FROM )", dockerfile, flags=re.M):
        m = re.match(r"FROM (\S+) AS (\S+)", block)
        if m:
            stages[m.group(2)] = (m.group(1), block)
    while target in stages:
        base, block = stages[target]
        m = re.search(r"^HEALTHCHECK .*?\n(?:  .*\n)*", block, re.M)
        if m:
            return m.group(0)
        target = base
    return ""


def test_dockerfile_passes_hadolint():
    r = subprocess.run(
        [tool("hadolint"), "docker/Dockerfile"], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    text = (REPO / "docker" / "Dockerfile").read_text()
    for target in (
        "classifier",
        "generator",
        "gateway",
        "trainer",
        "classifier-lambda",
        "gateway-lambda",
    ):
        assert re.search(rf"^FROM \S+ AS {target}$", text, re.M), target
    assert "USER 10001" in text
    # every service image has a health check, its own or its base stage's
    for target, probe in (
        ("classifier", "8080/readyz"),
        ("generator", "8080/readyz"),
        ("gateway", "8000/healthz"),
    ):
        assert probe in healthcheck_of(text, target), target
    assert "ARG TORCH_VARIANT=cpu" in text
    # the Lambda images are built without torch (tests/test_lambda.py: not imported)
    lambda_build = text.split("AS lambda-build", 1)[1].split("\nFROM ", 1)[0]
    assert "torch" not in lambda_build and ".[serve,lambda]" in lambda_build


@pytest.mark.parametrize(
    "files", [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.gpu.yml"]]
)
def test_compose_files_are_valid(files):
    args = [a for f in files for a in ("-f", f)]
    r = subprocess.run(
        [tool("docker-compose"), *args, "config", "-q"], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_start_order():
    doc = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    s = doc["services"]
    assert set(s) == {
        "trainer",
        "classifier",
        "generator",
        "gateway",
        "redis",
        "prometheus",
        "grafana",
    }
    for name in ("classifier", "generator"):
        assert s[name]["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert {k: v["condition"] for k, v in s["gateway"]["depends_on"].items()} == {
        "classifier": "service_healthy",
        "generator": "service_healthy",
        "redis": "service_healthy",
    }
    gpu = yaml.safe_load((REPO / "docker-compose.gpu.yml").read_text())["services"]
    for name in ("classifier", "generator", "trainer"):
        devices = gpu[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia"


def test_prometheus_scrapes_every_service():
    cfg = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in cfg["scrape_configs"]}
    assert jobs == {
        "classifier": ["classifier:8080"],
        "generator": ["generator:8080"],
        "gateway": ["gateway:8000"],
    }


def exported_metric_names() -> set[str]:
    from prometheus_client import REGISTRY

    import services.classifier.metrics
    import services.common.metrics
    import services.gateway.metrics
    import services.generator.metrics  # noqa: F401

    # Every sample name a registered collector can produce (name_total, name_bucket, ...),
    # including labelled metrics that have no children yet.
    return set(REGISTRY._names_to_collectors)


def test_dashboard_queries_only_metrics_that_exist():
    dash = json.loads((REPO / "deploy/grafana/dashboards/parlance.json").read_text())
    exported = exported_metric_names()
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for needed in (
        "request rate",
        "error rate",
        "p50",
        "p95",
        "p99",
        "batch size",
        "queue depth",
        "out-of-scope",
        "fallback",
        "form",
        "tokens/s",
    ):
        assert needed in titles, needed
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"
        for target in panel["targets"]:
            for name in re.findall(r"\bparlance_[a-z0-9_]+", target["expr"]):
                assert name in exported, f"{panel['title']}: {name} is not exported"


K8S = REPO / "deploy" / "k8s"


def k8s_documents():
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def test_kubernetes_manifests_validate_against_the_api_schemas():
    """kubernetes-validate checks every resource against the bundled OpenAPI schemas of a
    Kubernetes release (offline), strictly: unknown fields are errors."""
    import kubernetes_validate

    docs = list(k8s_documents())
    assert len(docs) >= 12
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, "1.31.0", strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{name} {doc['kind']}/{doc['metadata']['name']}: {e}") from e
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_kubernetes_deployments_probe_scale_and_share_sessions():
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_documents()}
    for name in ("classifier", "generator", "gateway"):
        pod = docs[("Deployment", name)]["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert pod["securityContext"]["runAsUser"] == 10001  # the images' user
        hpa = docs[("HorizontalPodAutoscaler", name)]["spec"]
        assert hpa["scaleTargetRef"]["name"] == name and hpa["maxReplicas"] > hpa["minReplicas"]
        assert ("PodDisruptionBudget", name) in docs
        port = c["ports"][0]["containerPort"]
        assert docs[("Service", name)]["spec"]["ports"][0]["targetPort"] == "http"
        assert port == (8000 if name == "gateway" else 8080)
    env = {
        e["name"]: e.get("value")
        for e in docs[("Deployment", "gateway")]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["REDIS_URL"] == "redis://redis:6379/0"  # shared sessions across replicas
    assert env["CLASSIFIER_URL"] == "http://classifier:8080"
