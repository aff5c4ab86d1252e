"""Webhook actions over real HTTP on loopback: the example back-end (examples/action_server),
deliberately bad back-ends (tests/bad_action_server.py), and a real gateway in front of the
stand-in classifier with a copy of the CLINC150 pack whose transfer form and balance intent
call them. The user always gets a clear reply, form slots survive a failure, retries and
"try again" carry one idempotency key, the breaker opens and closes, forged or stale
signatures are refused, private targets are refused unless allowed, and the secret is never
in a log, a metric or a reply."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
import yaml

from parlance.pack import load_pack
from parlance.webhooks import ActionRequest, IntentRef, sign, submission_key, verify
from services.gateway.actions import ActionsConfigError, WebhookCaller
from tests.bad_action_server import BadServer
from tests.servers import running
from tests.test_gateway_dialogue import Conversation, gateway_env

pytestmark = pytest.mark.slow
SECRET = "s3cret-for-the-tests-only-7f3a"
PACKS = Path(__file__).resolve().parents[1] / "assistants"


def pack_with_actions(tmp_path: Path, actions: dict, transfer_action: str | None = None):
    root = tmp_path / "clinc"
    shutil.copytree(PACKS / "clinc150", root, ignore=shutil.ignore_patterns("tests"))
    bundled = yaml.safe_load((root / "actions.yml").read_text())["actions"]
    (root / "actions.yml").write_text(yaml.safe_dump({"actions": {**bundled, **actions}}))
    if transfer_action:
        forms = yaml.safe_load((root / "forms.yml").read_text())
        f = forms["forms"]["money_transfer"]
        f["action"] = transfer_action
        f["done"] = "Done. <amount> is on its way to <to_account>, reference <reference>."
        (root / "forms.yml").write_text(yaml.safe_dump(forms))
    return root


def request(action: str = "account_balance", key: str = "k-1") -> ActionRequest:
    return ActionRequest(
        action=action,
        idempotency_key=key,
        session_id="s-1",
        text="what's my balance",
        intent=IntentRef(raw="balance", core="account_info", confidence=0.9),
        slots={},
    )


def caller(tmp_path, url: str, **options) -> WebhookCaller:
    fail_max = options.pop("fail_max", 5)
    spec = {
        "url": url,
        "secret": "${TEST_SECRET}",
        "facts": ["balance", "reference"],
        "allow_private_network": True,
        **options,
    }
    pack = load_pack(pack_with_actions(tmp_path, {"account_balance": spec}))
    return WebhookCaller(pack, fail_max, 0.5, environ={"TEST_SECRET": SECRET})


@pytest.fixture(scope="module")
def bad():
    server = BadServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    env = {"PARLANCE_ACTION_SECRET": SECRET}
    tmp = tmp_path_factory.mktemp("example")
    with running(["examples.action_server"], env, tmp) as svc:
        yield svc


# ---------------------------------------------------------------- the protocol


def test_signatures_verify_and_refuse_forgery_and_replay():
    body = b'{"action": "x"}'
    header = sign(SECRET, body)
    assert verify(SECRET, body, header)
    assert not verify("another secret", body, header)
    assert not verify(SECRET, body + b" ", header)  # the body changed on the way
    old = sign(SECRET, body, timestamp=int(time.time()) - 3600)
    assert not verify(SECRET, body, old)  # a replay outside the tolerance window
    assert not verify(SECRET, body, None) and not verify(SECRET, body, "t=abc,v1=00")
    now = int(time.time())
    assert not verify(SECRET, body, f"t={now},v1=é" + "0" * 63)  # a mismatch, not a TypeError
    # one submission, one key; another value, another key
    a = submission_key("s", "form-1", {"amount": "$5", "to": "savings"})
    assert a == submission_key("s", "form-1", {"to": "savings", "amount": "$5"})
    assert a != submission_key("s", "form-1", {"amount": "$6", "to": "savings"})


def test_the_example_server_refuses_forged_and_stale_signatures(example):
    body = request().model_dump_json().encode()
    url = example.url + "/actions/account_balance"
    headers = {"content-type": "application/json"}

    def post(signature: str | None) -> httpx.Response:
        extra = {"Parlance-Signature": signature} if signature else {}
        return httpx.post(url, content=body, headers={**headers, **extra}, timeout=10)

    assert post(sign(SECRET, body)).json() == {"facts": {"balance": "$1,250.00"}}
    assert post(None).status_code == 401
    assert post(sign("guessed", body)).status_code == 401
    assert post(sign(SECRET, body, timestamp=int(time.time()) - 600)).status_code == 401


# ---------------------------------------------------------------- the caller


@pytest.mark.parametrize(
    "path,reason,attempts",
    [
        ("/slow", "timeout", 2),
        ("/500", "http_500", 2),
        ("/close", "unreachable_RemoteProtocolError", 2),
        ("/badjson", "malformed_reply", 1),
        ("/html", "not_json", 1),
        ("/huge", "reply_too_large", 1),
        ("/gzip", "malformed_reply", 1),
        ("/deep", "malformed_reply", 1),
    ],
)
def test_bad_backends_end_in_a_failure_never_an_exception(bad, tmp_path, path, reason, attempts):
    c = caller(tmp_path, bad.url + path, timeout_s=0.5, retries=1)
    before = bad.hits(path)
    out = asyncio.run(c.call("account_balance", request()))
    assert (out.status, out.reason) == ("failed", reason)
    assert bad.hits(path) - before == attempts  # retried only where another try can help


def test_retries_carry_the_same_idempotency_key(bad, tmp_path):
    c = caller(tmp_path, bad.url + "/slow-first", timeout_s=1.0, retries=1)
    out = asyncio.run(c.call("account_balance", request(key="one-submission")))
    assert out.status == "ok" and out.facts == {"reference": "TX-1"}
    seen = [r for r in bad.requests if r["path"] == "/slow-first"]
    assert len(seen) == 2
    assert {r["headers"]["idempotency-key"] for r in seen} == {"one-submission"}
    assert {json.loads(r["body"])["idempotency_key"] for r in seen} == {"one-submission"}
    # each attempt is signed over its own bytes
    assert all(verify(SECRET, r["body"], r["headers"]["parlance-signature"]) for r in seen)


def test_breaker_opens_after_failures_and_closes_when_the_backend_is_back(bad, tmp_path):
    c = caller(tmp_path, bad.url + "/flaky", retries=0, fail_max=2)

    async def scenario():
        before = bad.hits("/flaky")
        first = [await c.call("account_balance", request()) for _ in range(2)]
        assert bad.hits("/flaky") - before == 2  # both reached the back-end
        hits = bad.hits("/flaky")
        opened = await c.call("account_balance", request())
        skipped = bad.hits("/flaky") == hits  # the open breaker did not call
        bad.heal()
        await asyncio.sleep(0.6)  # the breaker's reset time
        return first, opened, skipped, await c.call("account_balance", request())

    first, opened, skipped, healed = asyncio.run(scenario())
    # the second failure trips the breaker (aiobreaker reports that call as breaker_open)
    assert [o.status for o in first] == ["failed", "failed"] and first[0].reason == "http_503"
    assert opened.reason == "breaker_open" and skipped
    assert healed.status == "ok" and healed.facts == {"balance": "$1.00"}


def test_private_targets_are_refused_unless_the_action_allows_them(bad, tmp_path):
    before = len(bad.requests)
    for i, url in enumerate(
        (bad.url + "/ok", "http://169.254.169.254/latest", "http://localhost:9/x")
    ):
        c = caller(tmp_path / str(i), url, allow_private_network=False)
        out = asyncio.run(c.call("account_balance", request()))
        assert (out.status, out.reason) == ("failed", "target_refused"), url
    assert len(bad.requests) == before  # nothing was sent


def test_an_unset_variable_disables_the_action_or_stops_a_strict_start(tmp_path):
    spec = {"url": "${NOWHERE_URL}/x", "secret": "${TEST_SECRET}", "facts": ["balance"]}
    pack = load_pack(pack_with_actions(tmp_path, {"account_balance": spec}))
    c = WebhookCaller(pack, environ={"TEST_SECRET": SECRET})
    out = asyncio.run(c.call("account_balance", request()))
    assert (out.status, out.reason) == ("failed", "not_configured")
    with pytest.raises(ActionsConfigError, match="actions.account_balance: environment variable"):
        WebhookCaller(pack, environ={"TEST_SECRET": SECRET}, strict=True)


# ---------------------------------------------------------------- through the gateway


def test_facts_forms_refusals_and_failures_through_the_gateway(standin, example, bad, tmp_path):
    actions = {
        "account_balance": {
            "url": "${EXAMPLE_URL}/actions/account_balance",
            "secret": "${PARLANCE_ACTION_SECRET}",
            "facts": ["balance"],
            "allow_private_network": True,
        },
        "transfer_money": {
            "url": "${EXAMPLE_URL}/actions/transfer_money",
            "secret": "${PARLANCE_ACTION_SECRET}",
            "facts": ["reference"],
            "allow_private_network": True,
        },
    }
    root = pack_with_actions(tmp_path, actions, transfer_action="transfer_money")
    env = gateway_env(
        standin, PARLANCE_PACK=str(root), EXAMPLE_URL=example.url, PARLANCE_ACTION_SECRET=SECRET
    )
    with running(["services.gateway"], env, tmp_path) as gw:
        c = Conversation(gw.url)
        r = c.say("what's my balance")  # the back-end's figure in the intent's template
        assert r["source"] == "action" and "$1,250.00" in r["reply"]
        assert r["action"] == {"name": "account_balance", "outcome": "ok"}
        c.say("transfer $300 from checking to savings")
        r = c.say("yes")
        assert r["source"] == "action" and r["state"]["active_form"] is None
        assert r["reply"].startswith("Done. $300 is on its way to savings, reference TX-")
        r = c.say("what's my balance")  # the transfer really happened, once
        assert "$950.00" in r["reply"]
        # a refusal: the form asks for the slot again instead of finishing
        c.say("transfer $5000 from checking to savings")
        r = c.say("yes")
        assert r["reply"] == (
            "Your checking account has only $950.00. How much would you like to transfer?"
        )
        assert r["action"]["outcome"] == "error" and r["action"]["error"] == "insufficient_funds"
        assert r["state"]["active_form"] == "money_transfer" and r["state"]["awaiting"] == "amount"
        r = c.say("$50")
        assert r["state"]["confirming"] is True
        r = c.say("yes")
        assert "$50 is on its way" in r["reply"]
        effects = httpx.get(example.url + "/effects", timeout=10).json()["effects"]
        assert [e["slots"]["amount"] for e in effects] == ["$300", "$50"]
        log = Path(gw.log).read_text()
        metrics_page = httpx.get(gw.url + "/metrics", timeout=10).text
        assert 'parlance_gateway_action_calls_total{action="transfer_money",outcome="ok"} 2.0' in (
            metrics_page
        )
    for text in (log, metrics_page, json.dumps(r)):
        assert SECRET not in text


def transfer_gateway(standin, bad, tmp_path, path: str, **options):
    """A gateway whose transfer form submits to the bad back-end at `path`."""
    hook = {
        "url": bad.url + path,
        "secret": "${PARLANCE_ACTION_SECRET}",
        "facts": ["reference"],
        "retries": 0,
        "allow_private_network": True,
        **options,
    }
    root = pack_with_actions(tmp_path, {"transfer_money": hook}, transfer_action="transfer_money")
    env = gateway_env(standin, PARLANCE_PACK=str(root), PARLANCE_ACTION_SECRET=SECRET)
    return running(["services.gateway"], env, tmp_path)


def test_a_failed_submission_keeps_the_form_and_try_again_resubmits_it(standin, bad, tmp_path):
    """The back-end acts but answers too late: the user hears "couldn't complete", the form
    keeps its slots, and "try again" sends the same idempotency key, so the back-end can
    tell it is the same transfer."""
    with transfer_gateway(standin, bad, tmp_path, "/slow-first", timeout_s=1) as gw:
        c = Conversation(gw.url)
        c.say("transfer $20 from savings to checking")
        r = c.say("yes")
        assert r["source"] == "action" and "couldn't complete that" in r["reply"]
        assert r["action"] == {"name": "transfer_money", "outcome": "failed", "reason": "timeout"}
        assert r["state"]["active_form"] == "money_transfer"
        assert r["state"]["slots"] == {
            "amount": "$20",
            "from_account": "savings",
            "to_account": "checking",
        }
        r = c.say("what's the weather")  # something else meanwhile: answered, form kept
        assert r["state"]["active_form"] == "money_transfer"
        r = c.say("try again")
        assert r["reply"] == "Done. $20 is on its way to checking, reference TX-1."
        sent = [x for x in bad.requests if x["path"] == "/slow-first"]
        keys = {x["headers"]["idempotency-key"] for x in sent[-2:]}
        assert len(keys) == 1 and keys != {"one-submission"}
        body = json.loads(sent[-1]["body"])
        assert body["form"] == "money_transfer" and body["intent"]["raw"] == "transfer"
        assert body["slots"] == {
            "amount": "$20",
            "from_account": "savings",
            "to_account": "checking",
        }
        assert body["text"] == "try again" and body["pack"]["name"] == "clinc150"
    # the chat response never crashed into a 5xx, and nothing of the secret leaked
    assert SECRET not in Path(gw.log).read_text()


def test_gateway_without_the_secret_starts_and_says_the_action_is_unavailable(standin, tmp_path):
    env = gateway_env(standin, PARLANCE_ACTION_SECRET="")  # empty counts as unset
    with running(["services.gateway"], env, tmp_path) as gw:
        r = Conversation(gw.url).say("what's my balance")
        assert r["source"] == "action" and "can't get that right now" in r["reply"]
        assert r["action"] == {
            "name": "account_balance",
            "outcome": "failed",
            "reason": "not_configured",
        }
        assert "action disabled" in Path(gw.log).read_text()


def test_docs_show_the_current_schemas():
    from parlance.webhooks import schemas_markdown

    docs = (Path(__file__).resolve().parents[1] / "docs" / "actions.md").read_text()
    assert schemas_markdown() in docs, "regenerate: python -m parlance.webhooks"


@pytest.mark.parametrize(
    "address,public",
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("169.254.169.254", False),
        ("::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("::127.0.0.1", False),  # IPv4-compatible
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
    ],
)
def test_ssrf_guard_judges_ipv6_forms_by_the_ipv4_they_reach(address, public):
    from services.gateway.actions import _is_public

    assert _is_public(address) is public


def test_a_changed_value_after_a_failure_is_a_new_submission_not_a_resend(standin, bad, tmp_path):
    with transfer_gateway(standin, bad, tmp_path, "/500") as gw:
        c = Conversation(gw.url)
        c.say("transfer $20 from savings to checking")
        before = bad.hits("/500")
        assert "couldn't complete" in c.say("yes")["reply"]
        r = c.say("what time is it again?")  # "again", but not a retry
        assert bad.hits("/500") - before == 1 and "couldn't complete" not in r["reply"]
        r = c.say("ok, make that $25 instead")  # a correction: confirmed anew, not resent
        assert bad.hits("/500") - before == 1
        assert r["state"]["slots"]["amount"] == "$25" and r["state"]["confirming"] is True
        r = c.say("yes")  # the new submission
        assert bad.hits("/500") - before == 2
        keys = [x["headers"]["idempotency-key"] for x in bad.requests if x["path"] == "/500"]
        assert keys[-1] != keys[-2]  # $25 is another submission than $20
