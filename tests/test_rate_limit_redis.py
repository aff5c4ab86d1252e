"""Rate limits kept in a real Redis (GATEWAY_RATE_LIMIT with REDIS_URL, as compose runs the
gateway): shared by two gateway processes, so a caller's budget is one across replicas."""

from __future__ import annotations

from tests.servers import redis_server, running
from tests.test_gateway_dialogue import Conversation


def test_two_gateways_share_one_budget_in_redis(standin, tmp_path):
    with redis_server(tmp_path) as redis_url:
        env = {
            "CLASSIFIER_URL": standin.url,
            "GENERATOR_URL": "http://127.0.0.1:9",
            "REDIS_URL": redis_url,
            "GATEWAY_RATE_LIMIT": "3/minute",
        }
        with (
            running(["services.gateway"], env, tmp_path) as a,
            running(["services.gateway"], env, tmp_path) as b,
        ):
            Conversation(a.url).say("what is my balance")
            Conversation(b.url).say("what is my balance")
            Conversation(a.url).say("what is my balance")
            refused = Conversation(b.url).say("what is my balance", status=429)
            assert "rate" in str(refused).lower()
