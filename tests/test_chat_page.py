"""The chat page at / in a real headless Chromium (Debian's `chromium`, driven by
Playwright's Python package with the system browser), typing a multi-turn conversation
against a real gateway (stand-in classifier, as in test_gateway_dialogue)."""

from __future__ import annotations

import shutil

import pytest

from tests.servers import running
from tests.test_gateway_dialogue import gateway_env

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_multi_turn_conversation_in_the_browser(standin, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium not found: apt-get install chromium"
    env = gateway_env(standin, GATEWAY_API_KEYS="page-key")
    with running(["services.gateway"], env, tmp_path) as gw, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(gw.url + "/")

            def say(text: str) -> None:
                before = page.locator(".msg.bot").count()
                page.fill("#text", text)
                page.click("#send")
                expect(page.locator(".msg.bot")).to_have_count(before + 1)

            say("hello")  # no key yet: the page shows the gateway's error
            expect(page.locator(".msg.bot.error").last).to_contain_text("API key")
            page.fill("#key", "page-key")
            page.dispatch_event("#key", "change")
            say("I want to transfer money")
            expect(page.locator(".msg.bot").last).to_contain_text(
                "How much would you like to transfer?"
            )
            expect(page.locator("#intent")).to_contain_text("transfer → money_transfer")
            expect(page.locator("#form")).to_contain_text("money_transfer")
            say("$300 from checking to savings")
            expect(page.locator(".msg.bot").last).to_contain_text(
                "Transfer $300 from checking to savings. Shall I go ahead?"
            )
            expect(page.locator("#form")).to_contain_text("(confirming)")
            say("yes")
            expect(page.locator(".msg.bot").last).to_contain_text("Done. $300 is on its way")
            expect(page.locator("#form")).to_have_text("none")
            expect(page.locator("#source")).to_have_text("fulfilment")
            # a webhook action's outcome is shown: here the pack's balance action has no
            # back-end configured (PARLANCE_ACTION_SECRET unset), so it failed
            say("what's my balance")
            expect(page.locator(".msg.bot").last).to_contain_text("can't get that right now")
            expect(page.locator("#action")).to_have_text("account_balance: failed (not_configured)")
            expect(page.locator("#source")).to_have_text("action")
            # replies are text, not markup
            say("<b>blorp</b>")
            assert page.locator(".msg.user b").count() == 0
        finally:
            browser.close()
