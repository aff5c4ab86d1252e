"""The hand-written second pack end to end, through the same code as CLINC150: validate with
the CLI, train a small classifier with `parlance train`, serve it behind the gateway, and run
the pack's own scripted conversations (forms with its own slot types) against it. A gateway
given a classifier of another pack refuses to start."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from parlance.conversations import run_all
from tests.flags import flags
from tests.servers import free_port, running

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "assistants" / "bike_shop"


def parlance(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "parlance.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def bike_artifacts(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bike")
    r = parlance(
        "train",
        str(PACK),
        "--output",
        str(out),
        "--classifier-only",
        "--",
        *flags(
            num_train_epochs=4,
            min_train_steps=0,
            learning_rate="2e-4",
            per_device_train_batch_size=16,
            seed=13,
            soup_runs=1,
            disable_tqdm=True,
        ),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def test_validate_cli():
    r = parlance("validate", str(PACK))
    assert r.returncode == 0, r.stdout
    assert "bike_shop 1.0.0: 26 intents" in r.stdout and "no errors" in r.stdout


def test_trained_classifier_records_the_pack_and_rejects_without_oos_data(bike_artifacts):
    manifest = json.loads((bike_artifacts / "classifier" / "manifest.json").read_text())
    assert manifest["pack"]["name"] == "bike_shop"
    assert manifest["labels"][-1] == "oos" and len(manifest["labels"]) == 27
    # the pack has no out-of-scope examples: the bundled background set stood in
    assert manifest["data"]["background"]["train"] > 100
    assert manifest["metrics"]["inscope_accuracy"] > 0.8


def test_conversations_through_the_gateway(bike_artifacts, tmp_path):
    """The pack's forms submit to the shop's back-end: the example action server, over
    signed webhooks (actions.yml)."""
    secret = "bike-shop-test-secret"
    clf_args = ["services.classifier", "--artifact", str(bike_artifacts / "classifier")]
    backend_env = {"PARLANCE_ACTION_SECRET": secret}
    with (
        running(clf_args, {}, tmp_path) as clf,
        running(["examples.action_server"], backend_env, tmp_path) as backend,
    ):
        env = {
            "CLASSIFIER_URL": clf.url,
            "GENERATOR_URL": "http://127.0.0.1:9",
            "PARLANCE_PACK": str(PACK),
            "GATEWAY_RATE_LIMIT": "",
            "BIKE_SHOP_ACTIONS_URL": backend.url,
            "PARLANCE_ACTION_SECRET": secret,
        }
        with running(["services.gateway"], env, tmp_path) as gw:
            outcomes = run_all(PACK, gw.url)
            failures = [f"{o.name}: {o.failures}" for o in outcomes if not o.passed]
            forms = [o for o in outcomes if "repair" in o.name.lower() or "rent" in o.name.lower()]
            assert forms and all(o.passed for o in forms), failures
            assert len(failures) <= len(outcomes) // 4, failures
            # a booking made in a conversation is in the back-end, with its number
            booked = httpx.get(backend.url + "/effects", timeout=10).json()["effects"]
            assert any(e["action"] == "book_repair" for e in booked), booked
            r = httpx.post(
                gw.url + "/v1/chat",
                json={"text": "book a full service for my road bike tomorrow at 10am"},
                timeout=30,
            ).json()
            sid = r["session_id"]
            for text in ("Sam Jansen", "yes"):
                r = httpx.post(
                    gw.url + "/v1/chat", json={"session_id": sid, "text": text}, timeout=30
                ).json()
            assert r["source"] == "action" and r["action"]["outcome"] == "ok"
            assert re.search(r"booking number is BK-\d{4}", r["reply"]), r["reply"]
        # The CLINC150 pack's gateway in front of this classifier: refused with the reason.
        bad = subprocess.run(
            [sys.executable, "-m", "services.gateway", "--port", str(free_port())],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env, "PARLANCE_PACK": "clinc150"},
        )
        assert bad.returncode != 0
        assert "trained for 'bike_shop', not for pack 'clinc150'" in bad.stdout + bad.stderr
