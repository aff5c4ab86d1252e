"""Model versions swapped while serving: the classifier and the generator load a new
artifact in the background and switch without a failed request; a broken artifact, one
with other labels or one outside the models directory is refused while the old version
keeps serving; rollback; watching models_dir/current; the admin key; and the gateway
noticing a swapped classifier whose labels no longer fit its pack."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import running
from tests.test_gateway_dialogue import Conversation

pytestmark = pytest.mark.slow
ADMIN = {"X-Admin-Key": "swap-key"}


def versioned_copy(src: Path, dst: Path, version: str, **manifest_changes) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.update(version=version, **manifest_changes)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


@pytest.fixture(scope="module")
def models(small_artifact, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    versioned_copy(small_artifact, root / "v1", "swap-v1")
    versioned_copy(small_artifact, root / "v2", "swap-v2")
    broken = versioned_copy(small_artifact, root / "broken", "swap-broken")
    for name in ("model.onnx", "model.int8.onnx"):  # broken whichever backend serves
        (broken / "onnx" / name).write_bytes(b"not an onnx model")
    labels = json.loads((small_artifact / "manifest.json").read_text())["labels"]
    renamed = [("account_balance" if x == "balance" else x) for x in labels]
    versioned_copy(small_artifact, root / "renamed", "swap-renamed", labels=renamed)
    return root


class Load:
    """Requests from a few threads until stopped: every status and served version seen."""

    def __init__(self, url: str, path: str, body: dict, threads: int = 4):
        self.url, self.path, self.body = url, path, body
        self.results: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(self.url + self.path, json=self.body)
                    version = r.json()["model"]["version"] if r.status_code == 200 else ""
                    self.results.append((time.monotonic(), r.status_code, version))
                except httpx.HTTPError as e:
                    self.results.append((time.monotonic(), -1, repr(e)))

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join()


def classifier(models: Path, tmp: Path, **env):
    return running(
        ["services.classifier", "--artifact", str(models / "v1")],
        {
            "CLASSIFIER_ADMIN_KEY": "swap-key",
            "CLASSIFIER_MODELS_DIR": str(models),
            "CLASSIFIER_LOG_JSON": "false",
            **env,
        },
        tmp,
    )


def test_classifier_swap_under_load_fails_no_request(models, tmp_path):
    with classifier(models, tmp_path) as svc:
        body = {"texts": ["what's my account balance", "set an alarm for 7"]}
        with Load(svc.url, "/v1/classify", body) as load:
            time.sleep(1.0)
            r = httpx.post(
                svc.url + "/admin/model", json={"artifact": "v2"}, headers=ADMIN, timeout=120
            )
            assert r.status_code == 200, r.text
            swapped = r.json()
            time.sleep(1.5)
        assert swapped["version"] == "swap-v2" and swapped["previous"]["version"] == "swap-v1"
        statuses = [s for _, s, _ in load.results]
        assert statuses and set(statuses) == {200}, [r for r in load.results if r[1] != 200][:5]
        versions = [v for _, _, v in load.results]
        assert versions[0] == "swap-v1" and versions[-1] == "swap-v2"
        info = httpx.get(svc.url + "/v1/model").json()
        assert info["version"] == "swap-v2" and info["artifact"] == str(models / "v2")
        metrics = httpx.get(svc.url + "/metrics").text
        [info_line] = [
            x for x in metrics.splitlines() if x.startswith("parlance_classifier_model_info")
        ]
        assert 'version="swap-v2"' in info_line
        assert 'parlance_model_swaps_total{outcome="swapped",service="classifier"} 1.0' in metrics

        # Rolled back the same way: the previous version serves again.
        r = httpx.post(svc.url + "/admin/rollback", headers=ADMIN, timeout=120)
        assert r.status_code == 200 and r.json()["version"] == "swap-v1"
        assert httpx.get(svc.url + "/v1/model").json()["version"] == "swap-v1"


def test_refused_swaps_leave_the_old_version_serving(models, tmp_path):
    with classifier(models, tmp_path) as svc:

        def swap(body, headers=ADMIN):
            return httpx.post(svc.url + "/admin/model", json=body, headers=headers, timeout=120)

        r = swap({"artifact": "broken"})
        assert r.status_code == 422
        assert (
            "could not load" in r.text and "broken" in r.text and "still serving swap-v1" in r.text
        )
        r = swap({"artifact": "renamed"})
        assert r.status_code == 409 and "labels differ" in r.text and "account_balance" in r.text
        pack_labels = ["balance", "transactions", "timer", "alarm", "weather", "translate",
                       "book_flight", "greeting"]  # fmt: skip
        r = swap({"artifact": "renamed", "labels": pack_labels})
        assert r.status_code == 409 and "the pack does not have: account_balance" in r.text
        r = swap({"artifact": "../v1"})
        assert r.status_code == 403 and "outside the models directory" in r.text
        assert swap({"artifact": "v2"}, headers={}).status_code == 403
        assert swap({"artifact": "v2"}, headers={"X-Admin-Key": "nope"}).status_code == 403
        assert swap({}).status_code == 422

        served = httpx.post(svc.url + "/v1/classify", json={"texts": ["what's my balance"]})
        assert served.status_code == 200
        assert served.json()["model"]["version"] == "swap-v1"
        assert served.json()["predictions"][0]["intent"] == "balance"
        state = httpx.get(svc.url + "/admin/model", headers=ADMIN).json()
        assert state["serving"]["version"] == "swap-v1" and state["swaps"] == 0
        assert "account_balance" in state["last_error"]  # the last refusal, and why
        metrics = httpx.get(svc.url + "/metrics").text
        assert (
            'parlance_model_swaps_total{outcome="load_failed",service="classifier"} 1.0' in metrics
        )
        assert 'parlance_model_swaps_total{outcome="refused",service="classifier"} 2.0' in metrics


def test_admin_endpoints_are_off_without_a_key(models, tmp_path):
    with classifier(models, tmp_path, CLASSIFIER_ADMIN_KEY="") as svc:
        r = httpx.post(svc.url + "/admin/model", json={"artifact": "v2"}, headers=ADMIN)
        assert r.status_code == 403 and "disabled" in r.text


def test_watching_the_models_directory(models, tmp_path):
    watched = tmp_path / "watched"
    watched.mkdir()
    for name in ("v1", "v2", "broken"):
        os.symlink(models / name, watched / name)
    with classifier(watched, tmp_path, CLASSIFIER_WATCH_S="0.2") as svc:
        (watched / "current").write_text("broken\n")  # refused: keeps serving v1
        time.sleep(3)
        assert httpx.get(svc.url + "/v1/model").json()["version"] == "swap-v1"
        os.remove(watched / "current")
        os.symlink(watched / "v2", watched / "current")
        deadline = time.monotonic() + 60
        while httpx.get(svc.url + "/v1/model").json()["version"] != "swap-v2":
            assert time.monotonic() < deadline, "the watcher did not swap to v2"
            time.sleep(0.2)


def test_gateway_refuses_a_swapped_classifier_whose_labels_do_not_fit(models, tmp_path):
    with classifier(models, tmp_path) as clf:
        env = {
            "CLASSIFIER_URL": clf.url,
            "GENERATOR_URL": "http://127.0.0.1:9",
            "GATEWAY_RATE_LIMIT": "",
        }
        with running(["services.gateway"], env, tmp_path) as gw:
            c = Conversation(gw.url)
            assert c.say("what's my balance")["intent"]["raw"] == "balance"
            r = httpx.post(
                clf.url + "/admin/model",
                json={"artifact": "renamed", "allow_label_change": True},
                headers=ADMIN,
                timeout=120,
            )
            assert r.status_code == 200
            deadline = time.monotonic() + 20
            while httpx.get(gw.url + "/readyz").status_code == 200:
                assert time.monotonic() < deadline, "the gateway did not notice the new labels"
                time.sleep(0.2)
            ready = httpx.get(gw.url + "/readyz")
            assert "account_balance" in ready.text
            r = httpx.post(gw.url + "/v1/chat", json={"text": "what's my balance"})
            assert r.status_code == 503 and "labels the pack does not have" in r.text

            # Rolled back: the gateway serves again once it sees labels that fit.
            assert (
                httpx.post(clf.url + "/admin/rollback", headers=ADMIN, timeout=120).status_code
                == 200
            )
            deadline = time.monotonic() + 20
            while httpx.get(gw.url + "/readyz").status_code != 200:
                assert time.monotonic() < deadline, "the gateway did not recover"
                time.sleep(0.2)
            assert Conversation(gw.url).say("what's my balance")["intent"]["raw"] == "balance"


def test_generator_swap_under_load_fails_no_request(small_generator, tmp_path):
    models = tmp_path / "gen"
    versioned_copy(small_generator, models / "g1", "gen-v1")
    versioned_copy(small_generator, models / "g2", "gen-v2")
    broken = versioned_copy(small_generator, models / "broken", "gen-broken")
    (broken / "manifest.json").write_text("{not json")
    env = {"GENERATOR_ADMIN_KEY": "swap-key", "GENERATOR_MODELS_DIR": str(models)}
    with running(["services.generator", "--artifact", str(models / "g1")], env, tmp_path) as svc:
        body = {
            "intent": "timers_and_alarms",
            "raw_intent": "timer",
            "text": "set a timer for 5 minutes",
            "slots": {"duration": "5 minutes"},
        }
        r = httpx.post(svc.url + "/v1/generate", json=body, timeout=30)
        assert r.status_code == 200, r.text
        with Load(svc.url, "/v1/generate", body, threads=2) as load:
            time.sleep(1.0)
            r = httpx.post(
                svc.url + "/admin/model", json={"artifact": "g2"}, headers=ADMIN, timeout=300
            )
            assert r.status_code == 200, r.text
            time.sleep(1.5)
        statuses = [s for _, s, _ in load.results]
        assert statuses and set(statuses) == {200}, [r for r in load.results if r[1] != 200][:5]
        assert load.results[-1][2] == "gen-v2"
        r = httpx.post(
            svc.url + "/admin/model", json={"artifact": "broken"}, headers=ADMIN, timeout=60
        )
        assert r.status_code == 422 and "manifest" in r.text
        assert (
            httpx.post(svc.url + "/v1/generate", json=body, timeout=30).json()["model"]["version"]
            == "gen-v2"
        )


def test_a_failed_start_is_recovered_by_a_swap(models, tmp_path):
    env = {
        "CLASSIFIER_ADMIN_KEY": "swap-key",
        "CLASSIFIER_MODELS_DIR": str(models),
        "CLASSIFIER_LOG_JSON": "false",
    }
    args = ["services.classifier", "--artifact", str(models / "broken")]
    with running(args, env, tmp_path, ready_path="/healthz") as svc:
        deadline = time.monotonic() + 30
        while "failed to load" not in httpx.get(svc.url + "/readyz").text:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        r = httpx.post(
            svc.url + "/admin/model", json={"artifact": "v1"}, headers=ADMIN, timeout=120
        )
        assert r.status_code == 200 and r.json()["previous"] is None
        assert httpx.get(svc.url + "/readyz").status_code == 200
        served = httpx.post(svc.url + "/v1/classify", json={"texts": ["what's my balance"]})
        assert served.json()["model"]["version"] == "swap-v1"
