"""Capture and review through a real gateway process: turns worth a look land in the inbox
(redacted, with their reasons and versions), the review API behind the admin key, and the
review page in a real headless Chromium. The stand-in classifier (the point is the
gateway's capture, not the model); SQLite and a real PostgreSQL."""

from __future__ import annotations

import contextlib
import shutil
import time

import httpx
import pytest

from parlance.review import ReviewStore
from tests.servers import postgres_database, running
from tests.test_chat_page import CHROMIUM_FLAGS
from tests.test_gateway_dialogue import Conversation, gateway_env

pytestmark = pytest.mark.slow
ADMIN = {"X-Admin-Key": "review-key"}


def capturing_gateway(standin, db: str, **extra):
    env = gateway_env(
        standin,
        GATEWAY_CAPTURE="true",
        GATEWAY_REVIEW_DB=db,
        GATEWAY_ADMIN_KEY="review-key",
        **extra,
    )
    return env


def wait_for_items(store: ReviewStore, n: int, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = store.items(status=None, limit=100)
        if len(items) >= n:
            return items
        time.sleep(0.1)
    raise AssertionError(f"{len(store.items(status=None))} captured, expected {n}")


def converse(url: str) -> None:
    c = Conversation(url)
    assert c.say("hello")["source"] == "template"  # confident: not captured
    r = c.say("tell me a riddle about my email jo@example.com")  # out of scope
    assert r["source"] == "fallback"
    c.say("I want to transfer money")
    c.say("$300 from checking to savings")
    r = c.say("make that 250")  # a correction
    assert r["state"]["slots"]["amount"] == "$250"
    assert c.say("never mind")["state"]["active_form"] is None  # cancelled
    r = c.say("what's the weather ##unsure")  # low confidence, a close runner-up
    assert r["intent"]["confidence"] < 0.5


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_turns_worth_a_look_are_captured(standin, tmp_path, database):
    inbox = (
        postgres_database()
        if database == "postgresql"
        else contextlib.nullcontext(str(tmp_path / "inbox.db"))
    )
    with inbox as db:
        with running(["services.gateway"], capturing_gateway(standin, db), tmp_path) as gw:
            converse(gw.url)
            store = ReviewStore(db)
            items = {i.text: i for i in wait_for_items(store, 4)}
            metrics = httpx.get(gw.url + "/metrics").text
        assert "hello" not in items and "$300 from checking to savings" not in items
        riddle = items["tell me a riddle about my email <email>"]  # redacted before writing
        assert set(riddle.reasons) == {"out_of_scope", "fallback"} and riddle.oos
        assert riddle.model_version == "standin" and riddle.pack_name == "clinc150"
        assert items["make that 250"].reasons == ["form_correction"]
        assert "form_cancelled" in items["never mind"].reasons
        unsure = items["what's the weather ##unsure"]
        assert set(unsure.reasons) == {"low_confidence", "small_margin"}
        assert unsure.second_intent == "greeting" and unsure.margin == pytest.approx(0.04)
        assert 'parlance_gateway_review_captured_total{reason="out_of_scope"} 1.0' in metrics
        store.close()


def test_capture_is_off_by_default_and_the_inbox_needs_the_admin_key(standin, tmp_path):
    db = tmp_path / "inbox.db"
    env = gateway_env(standin, GATEWAY_REVIEW_DB=str(db))
    with running(["services.gateway"], env, tmp_path) as gw:
        Conversation(gw.url).say("tell me a riddle")
        r = httpx.get(gw.url + "/v1/review/items")
        assert r.status_code == 403 and "admin endpoints are disabled" in r.text
    assert not db.exists()  # nothing was written, not even an empty inbox


def test_review_api_decides_with_the_admin_key(standin, tmp_path):
    db = str(tmp_path / "inbox.db")
    env = capturing_gateway(standin, db, GATEWAY_API_KEYS="user-key")
    with running(["services.gateway"], env, tmp_path) as gw:
        c = Conversation(gw.url, {"X-API-Key": "user-key"})
        c.say("tell me a riddle")
        c.say("what's the weather ##unsure")
        wait_for_items(ReviewStore(db), 2)
        api = gw.url + "/v1/review"
        assert httpx.get(api + "/items", headers={"X-API-Key": "user-key"}).status_code == 403
        assert httpx.get(api + "/items", headers={"X-Admin-Key": "wrong"}).status_code == 403
        page = httpx.get(api + "/items", headers=ADMIN).json()
        assert [i["text"] for i in page["items"]] == [
            "what's the weather ##unsure",
            "tell me a riddle",
        ]
        assert "weather" in page["labels"] and page["labels"][-1] == "oos"
        riddle, weather = page["items"][1]["id"], page["items"][0]["id"]
        counts = httpx.get(api + "/counts", headers=ADMIN).json()["counts"]
        assert counts == {"weather": {"new": 1}, "oos": {"new": 1}}

        r = httpx.post(
            api + "/decisions",
            json={"ids": [riddle], "decision": "relabel", "label": "teleport"},
            headers=ADMIN,
        )
        assert r.status_code == 422 and "not a label of pack 'clinc150'" in r.text
        r = httpx.post(
            api + "/decisions", json={"ids": [12345], "decision": "accept"}, headers=ADMIN
        )
        assert r.status_code == 404
        r = httpx.post(
            api + "/decisions",
            json={"ids": [riddle], "decision": "relabel", "label": "fun_fact"},
            headers=ADMIN,
        )
        assert r.status_code == 200 and r.json()["items"][0]["label"] == "fun_fact"
        httpx.post(api + "/decisions", json={"ids": [weather], "decision": "accept"}, headers=ADMIN)
        left = httpx.get(api + "/items", headers=ADMIN).json()["items"]
        assert left == []  # nothing new left
        accepted = httpx.get(api + "/items?status=accepted", headers=ADMIN).json()["items"]
        assert {i["label"] for i in accepted} == {"fun_fact", "weather"}
        assert httpx.get(api + "/items?status=bogus", headers=ADMIN).status_code == 422


def test_review_page_in_the_browser(standin, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium not found: apt-get install chromium"
    db = str(tmp_path / "inbox.db")
    with running(["services.gateway"], capturing_gateway(standin, db), tmp_path) as gw:
        c = Conversation(gw.url)
        c.say("tell me a riddle")
        c.say("what's the weather ##unsure")
        c.say("sing me a song")
        store = ReviewStore(db)
        wait_for_items(store, 3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.goto(gw.url + "/review")
                expect(page.locator("#error")).to_contain_text("admin")  # no key yet
                page.fill("#key", "review-key")
                page.dispatch_event("#key", "change")
                rows = page.locator("#items tr")
                expect(rows).to_have_count(3)
                expect(page.locator("#counts")).to_contain_text("oos: 2 new")

                riddle = rows.filter(has_text="tell me a riddle")
                riddle.locator("input.label").fill("fun_fact")
                riddle.locator("button.relabel").click()
                expect(rows).to_have_count(2)
                rows.filter(has_text="weather").locator("button.accept").click()
                expect(rows).to_have_count(1)
                rows.filter(has_text="sing me a song").locator("button.discard").click()
                expect(page.locator("#empty")).to_be_visible()

                page.select_option("#status", "accepted")
                expect(rows).to_have_count(2)
                page.select_option("#status", "all")
                page.fill("#intent", "oos")
                page.dispatch_event("#intent", "change")
                expect(rows).to_have_count(2)  # the riddle was predicted oos, relabelled
            finally:
                browser.close()
        decided = {i.text: (i.status, i.label) for i in store.items(status=None)}
        assert decided == {
            "tell me a riddle": ("accepted", "fun_fact"),
            "what's the weather ##unsure": ("accepted", "weather"),
            "sing me a song": ("discarded", None),
        }
        store.close()


def test_an_unreachable_inbox_never_stops_the_gateway(standin, tmp_path):
    from tests.servers import free_port

    db = f"postgresql://nobody:nothing@127.0.0.1:{free_port()}/inbox"  # nothing listens
    with running(["services.gateway"], capturing_gateway(standin, db), tmp_path) as gw:
        r = Conversation(gw.url).say("tell me a riddle")  # captured, then dropped
        assert r["source"] == "fallback"
        r = httpx.get(gw.url + "/v1/review/items", headers=ADMIN)
        assert r.status_code == 503 and "unreachable" in r.text
        assert httpx.get(gw.url + "/readyz").status_code == 200
        # and says so in its log (the inbox opens in a thread: on a busy machine the first
        # attempt can fail after the turns above were answered)
        log = tmp_path / f"service-{gw.port}.log"
        deadline = time.monotonic() + 30
        while "review inbox" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    assert "review inbox" in log.read_text()
