"""With API keys configured, every gateway route but liveness, readiness, metrics and the
static chat page refuses a caller without a valid key (401) before reading the body, and
no key ever reaches the log. The routes are enumerated from the app itself, so a route
added later is covered without editing this test."""

from __future__ import annotations

import httpx
import pytest

from tests.servers import running

KEY = "auth-test-key-5f1c9a"
OPEN = {"/healthz", "/readyz", "/ping", "/metrics", "/", "/review"}


def gateway_routes() -> list[tuple[str, str]]:
    from services.gateway.app import create_app
    from services.gateway.config import GatewaySettings

    app = create_app(GatewaySettings(api_keys=KEY))
    out = []

    def walk(routes, prefix: str = "") -> None:
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI >= 0.165
            if included is not None:
                walk(included.routes, prefix + route.include_context.prefix)
            for method in sorted(getattr(route, "methods", None) or ()):
                if method != "HEAD":
                    out.append((method, prefix + route.path))

    walk(app.routes)
    return out


@pytest.fixture(scope="module")
def gateway(standin, tmp_path_factory):
    env = {
        "CLASSIFIER_URL": standin.url,
        "GENERATOR_URL": "http://127.0.0.1:9",
        "GATEWAY_API_KEYS": f"other-key,{KEY}",
        "GATEWAY_RATE_LIMIT": "",
    }
    with running(["services.gateway"], env, tmp_path_factory.mktemp("auth")) as gw:
        yield gw


def test_every_route_but_the_open_ones_needs_a_key(gateway):
    routes = gateway_routes()
    paths = {p for _, p in routes}
    assert {"/v1/chat", "/v1/classify", "/v1/labels", "/openapi.json", "/docs"} <= paths
    for method, path in routes:
        url = gateway.url + path.replace("{", "").replace("}", "")
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"X-API-Key": KEY + "x"},
            {"Authorization": f"Basic {KEY}"},
        ):
            r = httpx.request(method, url, headers=headers, content=b"{not json", timeout=10)
            if path in OPEN:
                assert r.status_code != 401, (method, path)
            elif path.startswith("/v1/review/"):
                # the review inbox takes the admin key, not an API key (none configured here)
                assert r.status_code == 403, (method, path, headers, r.status_code)
                assert r.json()["error"]["code"] == "forbidden"
            else:
                # 401 even for a body that is not JSON: the key is checked first
                assert r.status_code == 401, (method, path, headers, r.status_code)
                assert r.json()["error"]["code"] == "unauthorized"
                assert r.headers["www-authenticate"] == "Bearer"


def test_open_routes_answer_without_a_key_and_keys_work_both_ways(gateway):
    for path in ("/healthz", "/readyz", "/metrics", "/"):
        assert httpx.get(gateway.url + path, timeout=10).status_code == 200, path
    body = {"session_id": "auth-1", "text": "hello"}
    for headers in (
        {"Authorization": f"Bearer {KEY}"},
        {"X-API-Key": KEY},
        {"X-API-Key": "other-key"},
    ):
        assert (
            httpx.post(gateway.url + "/v1/chat", json=body, headers=headers, timeout=10).status_code
            == 200
        )
    docs = httpx.get(gateway.url + "/openapi.json", headers={"X-API-Key": KEY}, timeout=10)
    assert docs.status_code == 200
    doc = docs.json()
    schemes = doc["components"]["securitySchemes"]
    # each route names the ways its key is presented, each scheme the header it reads
    for path, method in (("/v1/chat", "post"), ("/v1/classify", "post"), ("/v1/labels", "get")):
        named = {name for option in doc["paths"][path][method]["security"] for name in option}
        assert named == {"ApiKeyBearer", "ApiKeyHeader"}, path
    assert schemes["ApiKeyBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key",
    }
    assert (schemes["ApiKeyHeader"]["in"], schemes["ApiKeyHeader"]["name"]) == (
        "header",
        "X-API-Key",
    )
    review = doc["paths"]["/v1/review/items"]["get"]["security"]
    assert review == [{"AdminKey": []}]
    assert schemes["AdminKey"]["name"] == "X-Admin-Key"


def test_keys_are_never_logged(gateway):
    httpx.post(
        gateway.url + "/v1/chat",
        json={"text": "hello"},
        headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": "auth-log-check"},
    )
    httpx.post(
        gateway.url + "/v1/chat",
        json={"text": "hello"},
        headers={"X-API-Key": "a-wrong-key-that-is-also-secret"},
    )
    log = gateway.log.read_text()
    assert "gateway" in log  # the log is the real one (startup lines at least)
    assert KEY not in log and "a-wrong-key-that-is-also-secret" not in log
    assert "other-key" not in log
