"""The generator service over real HTTP on loopback, serving an artifact trained in the
session (tests/conftest.py: small_generator)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.servers import running

pytestmark = pytest.mark.slow

TIMER = {
    "intent": "timers_and_alarms",
    "text": "set a timer for 12 minutes",
    "slots": {"duration": "12 minutes"},
}


@pytest.fixture(scope="module")
def service(small_generator, tmp_path_factory):
    env = {
        "GENERATOR_MAX_WAIT_MS": "5",
        "GENERATOR_MAX_TEXT_CHARS": "300",
        "GENERATOR_MAX_SLOTS": "4",
    }
    with running(
        ["services.generator", "--artifact", str(small_generator)],
        env,
        tmp_path_factory.mktemp("gen-svc"),
    ) as svc:
        yield svc


def post(svc, body, path="/v1/generate", **kw):
    return httpx.post(svc.url + path, json=body, timeout=60, **kw)


def test_contract_shape(service):
    r = post(service, {**TIMER, "max_new_tokens": 48}, headers={"X-Request-ID": "gen-1"})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "gen-1"
    body = r.json()
    from services.generator.schemas import GenerateResponse

    GenerateResponse.model_validate(body)
    assert "12 minutes" in body["reply"]
    assert body["model"]["version"].startswith("cpu-")
    assert 0 < body["generated_tokens"] <= 48
    assert body["source"] in ("model", "template")
    alarm = post(
        service,
        {"intent": "timers_and_alarms", "text": "wake me up at 6 am", "slots": {"time": "6:00 AM"}},
    )
    assert alarm.status_code == 200 and "6:00 AM" in alarm.json()["reply"]
    facts = post(
        service,
        {
            "intent": "calculations_and_conversions",
            "text": "what is 6 x 7",
            "slots": {"expression": "6 * 7"},
            "facts": {"result": "42"},
        },
    )
    assert "42" in facts.json()["reply"]
    # SageMaker route: same body, same answer
    assert post(service, TIMER, "/invocations").json()["reply"] == r.json()["reply"]


def test_concurrent_requests_are_batched_and_answer_like_sequential_ones(service):
    bodies = [
        TIMER,
        {"intent": "small_talk", "text": "hello there, how are you"},
        {
            "intent": "language_help",
            "text": "how do you spell because",
            "slots": {"word": "because"},
            "facts": {"spelled": "B-E-C-A-U-S-E"},
        },
        {"intent": "games_of_chance", "text": "flip a coin", "facts": {"outcome": "heads"}},
        {
            "intent": "timers_and_alarms",
            "text": "start a 3 minute timer",
            "slots": {"duration": "3 minutes"},
            "max_new_tokens": 5,
        },
    ]
    sequential = [post(service, b).json()["reply"] for b in bodies]

    async def together():
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as c:
            return await asyncio.gather(*[c.post("/v1/generate", json=b) for b in bodies * 4])

    rs = asyncio.run(together())
    assert [r.status_code for r in rs] == [200] * len(rs)
    assert [r.json()["reply"] for r in rs] == sequential * 4
    assert rs[4].json()["generated_tokens"] <= 5
    m = httpx.get(service.url + "/metrics").text
    batches = [
        line
        for line in m.splitlines()
        if line.startswith('parlance_batch_size_count{batcher="generator"}')
    ]
    sizes_sum = [
        line
        for line in m.splitlines()
        if line.startswith('parlance_batch_size_sum{batcher="generator"}')
    ]
    # fewer batches than requests: concurrent requests shared batches
    assert float(batches[0].split()[-1]) < float(sizes_sum[0].split()[-1])


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({**TIMER, "intent": "time_travel"}, "unknown core intent"),
        ({**TIMER, "intent": "money_transfer"}, "not answered by the generator"),
        ({**TIMER, "text": "   "}, "empty"),
        ({**TIMER, "text": "x" * 301}, "the limit is 300"),
        ({**TIMER, "slots": {"duration": 5}}, "slots.duration"),
        ({**TIMER, "slots": {"duration": ["5 minutes"]}}, "slots.duration"),
        ({**TIMER, "slots": {"colour": "red"}}, "unknown name 'colour'"),
        ({**TIMER, "facts": {"result": ""}}, "facts.result"),
        (
            {
                **TIMER,
                "slots": {
                    "duration": "1 minute",
                    "place": "Paris",
                    "word": "a",
                    "phrase": "b",
                    "dish": "c",
                },
            },
            "at most 4",
        ),
        ({**TIMER, "max_new_tokens": 0}, "between 1 and 128"),
        ({**TIMER, "max_new_tokens": 129}, "between 1 and 128"),
        ({**TIMER, "max_new_tokens": "5"}, "max_new_tokens"),
        ({**TIMER, "extra": 1}, "extra"),
        ({"text": "hi"}, "intent"),
        ({**TIMER, "timeout_ms": 0}, "timeout_ms"),
    ],
)
def test_bad_input_is_a_clear_422(service, body, fragment):
    r = post(service, body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_input" and fragment in err["message"], err
    assert err["request_id"]


def test_deadline_gives_504_not_a_hang(service):
    r = post(service, {**TIMER, "timeout_ms": 1})
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "deadline_exceeded"
    assert "timeout_ms" in r.json()["error"]["message"]
    assert post(service, TIMER).status_code == 200  # and the service is fine afterwards
    assert (
        "parlance_generator_deadline_exceeded_total 1.0" in httpx.get(service.url + "/metrics").text
    )


def test_metrics_and_model_info(service):
    post(service, TIMER)
    m = httpx.get(service.url + "/metrics").text
    for name in (
        "parlance_generator_replies_total",
        "parlance_generator_generated_tokens_total",
        "parlance_generator_time_per_output_token_seconds_bucket",
        "parlance_generator_tokens_per_reply_bucket",
        'parlance_queue_depth{batcher="generator"}',
        'parlance_batch_size_bucket{batcher="generator"',
        "parlance_generator_model_info",
    ):
        assert name in m, name
    info = httpx.get(service.url + "/v1/model").json()
    assert info["num_beams"] == 1 and info["preset"] == "cpu"
    assert "/v1/generate" in httpx.get(service.url + "/openapi.json").json()["paths"]


def test_overload_is_429_and_beams_are_a_setting(small_generator, tmp_path):
    env = {"GENERATOR_MAX_QUEUE": "2", "GENERATOR_MAX_BATCH_SIZE": "1", "GENERATOR_NUM_BEAMS": "2"}

    async def flood(url):
        async with httpx.AsyncClient(
            base_url=url, timeout=60, limits=httpx.Limits(max_connections=64)
        ) as c:
            return await asyncio.gather(*[c.post("/v1/generate", json=TIMER) for _ in range(24)])

    with running(["services.generator", "--artifact", str(small_generator)], env, tmp_path) as svc:
        assert httpx.get(svc.url + "/v1/model").json()["num_beams"] == 2
        codes = [r.status_code for r in asyncio.run(flood(svc.url))]
        assert 429 in codes and 200 in codes and set(codes) <= {200, 429}, codes
        assert post(svc, TIMER).status_code == 200


def test_continuous_batching_overload_and_abandoned_requests(small_generator, tmp_path):
    """The ONNX decoder's continuous scheduler (opt-in): a full queue is 429 at once;
    requests whose deadline passes mid-decoding leave the running batch (504) and the others
    still get their replies."""
    continuous = {"GENERATOR_CONTINUOUS_BATCHING": "true"}
    env = {**continuous, "GENERATOR_MAX_QUEUE": "2", "GENERATOR_MAX_BATCH_SIZE": "4"}
    spell = {
        "intent": "language_help",
        "text": "how do you spell because",
        "slots": {"word": "because"},
        "facts": {"spelled": "B-E-C-A-U-S-E"},
    }

    async def at_once(url, bodies):
        async with httpx.AsyncClient(
            base_url=url, timeout=60, limits=httpx.Limits(max_connections=64)
        ) as c:
            return await asyncio.gather(*[c.post("/v1/generate", json=b) for b in bodies])

    with running(["services.generator", "--artifact", str(small_generator)], env, tmp_path) as svc:
        model = httpx.get(svc.url + "/v1/model").json()
        assert model["backend"] in ("onnx", "onnx-int8"), model
        codes = [r.status_code for r in asyncio.run(at_once(svc.url, [TIMER] * 24))]
        assert 429 in codes and 200 in codes and set(codes) <= {200, 429}, codes

    args = ["services.generator", "--artifact", str(small_generator)]
    with running(args, continuous, tmp_path) as svc:
        alone = post(svc, spell).json()["reply"]
        bodies = [{**spell, "timeout_ms": 2} if i % 2 else spell for i in range(8)]
        rs = asyncio.run(at_once(svc.url, bodies))
        assert [r.status_code for r in rs[1::2]] == [504] * 4
        assert [r.json()["reply"] for r in rs[::2]] == [alone] * 4
        assert "B-E-C-A-U-S-E" in alone
        assert post(svc, TIMER).status_code == 200  # nothing stuck behind them
        m = httpx.get(svc.url + "/metrics").text
        assert 'parlance_batch_size_count{batcher="generator"}' in m


def test_sagemaker_serve_mode(small_generator, tmp_path):
    from tests.servers import free_port

    port = free_port()
    env = {"SAGEMAKER_BIND_TO_PORT": str(port), "GENERATOR_ARTIFACT": str(small_generator)}
    with running(
        ["services.generator", "serve"], env, tmp_path, port=port, ready_path="/ping"
    ) as svc:
        # SageMaker fails a health check that takes over 2 s
        assert httpx.get(svc.url + "/ping", timeout=2).status_code == 200
        assert post(svc, TIMER, "/invocations").status_code == 200


@pytest.mark.parametrize(
    "make,fragment",
    [
        (lambda d: None, "not a generator artifact"),
        (
            lambda d: (d.mkdir(), (d / "manifest.json").write_text('{"kind": "classifier"}')),
            "not 'generator'",
        ),
        (
            lambda d: (d.mkdir(), (d / "manifest.json").write_text('{"kind": "generator"}')),
            "missing the model/ directory",
        ),
    ],
)
def test_bad_artifact_fails_fast_with_a_message(tmp_path, make, fragment):
    import subprocess
    import sys

    art = tmp_path / "art"
    make(art)
    r = subprocess.run(
        [sys.executable, "-m", "services.generator", "--artifact", str(art), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and fragment in r.stdout + r.stderr


def test_every_builder_example_is_a_valid_request(clinc_path):
    """What the data builder (and so the gateway) produces, the service accepts."""
    from services.generator.config import GeneratorSettings
    from services.generator.schemas import GenerateRequest
    from services.generator.service import validate
    from training.data import load_clinc
    from training.response_data import build_examples

    settings = GeneratorSettings(artifact="unused")
    from services.generator.text import default_domain

    for e in build_examples(load_clinc(clinc_path, "full"), splits=("test",))["test"]:
        validate(
            GenerateRequest(
                intent=e.core_intent,
                raw_intent=e.raw_intent,
                text=e.text,
                slots=e.slots,
                facts=e.facts,
            ),
            settings,
            default_domain(),
        )
