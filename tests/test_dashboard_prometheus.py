"""Every Grafana panel's PromQL, evaluated by a real Prometheus (Debian package) that scrapes
the three services running as local processes after some real traffic: each query must
return data. (The dashboard JSON is the one docker compose provisions.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, running
from tests.test_gateway_dialogue import Conversation

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def prometheus(tmp: Path, targets: dict[str, str]):
    binary = shutil.which("prometheus")
    assert binary, "prometheus not found: apt-get install prometheus"
    jobs = "\n".join(
        f"  - job_name: {name}\n    static_configs: [{{targets: ['{t}']}}]"
        for name, t in targets.items()
    )
    cfg = tmp / "prometheus.yml"
    cfg.write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp}/tsdb",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}"


def query(url: str, expr: str) -> list:
    r = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel of the provisioned dashboard."""
    dash = json.loads((REPO / "deploy/grafana/dashboards/parlance.json").read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def dashboard_traffic(gateway_url: str, rounds: int = 3) -> None:
    """Turns that feed every panel (generated, small talk, out of scope, a form and its
    cancellation), spread over a few scrape intervals."""
    for _ in range(rounds):
        c = Conversation(gateway_url)
        c.say("start a timer for 10 minutes")
        c.say("hello there")
        c.say("who painted the mona lisa")
        c.say("book a flight from boston to tokyo")
        c.say("cancel")
        time.sleep(1.5)


def test_every_panel_returns_data(small_artifact, small_generator, tmp_path):
    with (
        running(["services.classifier", "--artifact", str(small_artifact)], {}, tmp_path) as clf,
        running(["services.generator", "--artifact", str(small_generator)], {}, tmp_path) as gen,
    ):
        env = {"CLASSIFIER_URL": clf.url, "GENERATOR_URL": gen.url, "GATEWAY_RATE_LIMIT": ""}
        with running(["services.gateway"], env, tmp_path) as gw:
            proc, prom = prometheus(
                tmp_path,
                {
                    "classifier": clf.url.removeprefix("http://"),
                    "generator": gen.url.removeprefix("http://"),
                    "gateway": gw.url.removeprefix("http://"),
                },
            )
            try:
                deadline = time.time() + 60
                while time.time() < deadline:
                    up = query(prom, "up") if _alive(prom) else []
                    if len(up) == 3 and all(x["value"][1] == "1" for x in up):
                        break
                    time.sleep(0.5)
                else:
                    pytest.fail("prometheus did not scrape the three services")
                dashboard_traffic(gw.url)
                time.sleep(3)
                empty = [title for title, expr in panel_queries() if not query(prom, expr)]
                assert not empty, f"panels without data: {empty}"
            finally:
                proc.terminate()
                proc.wait(timeout=20)


def _alive(url: str) -> bool:
    try:
        return httpx.get(url + "/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
