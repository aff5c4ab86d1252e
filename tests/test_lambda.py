"""The serverless packaging without AWS: the classifier's and the gateway's Lambda handlers,
each in a fresh process (a real cold start), invoked with API Gateway HTTP API (payload 2.0)
events from tests/data/lambda/."""

from __future__ import annotations

import base64
import json

import pytest

from benchmarks.deployment import invoke_fresh

pytest.importorskip("mangum")
pytestmark = pytest.mark.slow


def body_of(response: dict) -> dict:
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return json.loads(body)


def test_classifier_handler_answers_api_gateway_events(small_artifact):
    env = {"CLASSIFIER_ARTIFACT": str(small_artifact)}
    result = invoke_fresh(
        "services.classifier.lambda_handler",
        ["classify.json", "classify_base64.json", "classify_invalid.json", "healthz.json"],
        env,
        repeat=2,
    )
    calls = [c["response"] for c in result["invocations"]]
    ok, b64, invalid, health = calls[:4]
    assert ok["statusCode"] == 200
    preds = body_of(ok)["predictions"]
    assert [p["intent"] for p in preds] == ["balance", "timer"]
    assert len(preds[0]["top_k"]) == 2
    assert ok["headers"]["content-type"] == "application/json"
    assert "x-request-id" in ok["headers"]
    # the same request with a base64 body (as API Gateway sends binary media) is the same request
    assert b64["statusCode"] == 200 and body_of(b64)["predictions"] == preds
    assert invalid["statusCode"] == 422 and "texts" in json.dumps(body_of(invalid))
    assert health["statusCode"] == 200
    # the second round is served by the same (warm) instance, same answers
    assert [c["statusCode"] for c in calls[4:]] == [200, 200, 422, 200]
    assert body_of(calls[4])["predictions"] == preds
    # the ONNX path needs no torch: the Lambda image does not ship it
    assert result["torch_imported"] is False


def test_gateway_handler_answers_api_gateway_events(standin):
    env = {
        "CLASSIFIER_URL": standin.url,
        "GENERATOR_URL": "http://127.0.0.1:9",
        "GATEWAY_API_KEYS": "lambda-test-key",
        "GATEWAY_RATE_LIMIT": "",
    }
    result = invoke_fresh(
        "services.gateway.lambda_handler",
        ["chat.json", "chat_no_key.json", "labels.json", "healthz.json"],
        env,
    )
    chat, no_key, labels, health = [c["response"] for c in result["invocations"]]
    assert chat["statusCode"] == 200, chat
    body = body_of(chat)
    assert body["state"]["active_form"] == "money_transfer"
    assert body["state"]["slots"]["amount"] and body["reply"]
    assert no_key["statusCode"] == 401
    assert "lambda-test-key" not in json.dumps(result)  # nor echoed in any response
    assert labels["statusCode"] == 200 and "core_intents" in json.dumps(body_of(labels))
    assert health["statusCode"] == 200
    assert result["torch_imported"] is False
