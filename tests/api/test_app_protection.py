"""API keys, rate limits, the error envelope on every error, request ids and JSON logs."""

from __future__ import annotations

import io
import json
import logging

from api.server.observability import LOGGER, JsonFormatter
from api.server.protection import RateLimiter
from tests.agents.fakes import fake_llm
from tests.api.conftest import checked

CHAT = {"model": "base", "messages": [{"role": "user", "content": "hi"}]}


def test_api_keys_guard_v1_but_not_health(make_app):
    client = make_app(api_keys=("k-one", "k-two")).test_client()
    missing = client.get("/v1/models")
    assert missing.status_code == 401
    assert missing.get_json()["error"] == {
        "type": "authentication_error",
        "message": "missing API key: send the header `Authorization: Bearer <key>`",
        "param": None,
        "code": "missing_api_key",
    }
    wrong = client.get("/v1/models", headers={"Authorization": "Bearer k-three"})
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "invalid_api_key"
    basic = client.get("/v1/models", headers={"Authorization": "Basic k-one"})
    assert basic.status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer k-two"}).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_rate_limit_per_key_answers_429_with_retry_after(make_app):
    client = make_app(
        api_keys=("a", "b"), rate_limit_per_minute=6, rate_limit_burst=2
    ).test_client()
    key_a = {"Authorization": "Bearer a"}
    assert [client.get("/v1/models", headers=key_a).status_code for _ in range(2)] == [200, 200]
    limited = client.get("/v1/models", headers=key_a)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "10"  # 6 per minute: one every 10 s
    error = limited.get_json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    # another key has its own bucket; health checks are never limited
    assert client.get("/v1/models", headers={"Authorization": "Bearer b"}).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_token_bucket_refills_at_the_rate():
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 1.0]
    now[0] = 0.5
    assert limiter.take("k") == 0.5
    now[0] = 1.0
    assert limiter.take("k") == 0.0


def test_404_405_413_and_500_use_the_envelope_and_show_no_traceback(make_app, context):
    client = make_app(max_request_bytes=1_000).test_client()
    not_found = client.get("/v1/nothing-here")
    assert not_found.status_code == 404
    assert not_found.get_json()["error"]["type"] == "not_found_error"
    not_allowed = client.put("/v1/chat/completions", json=CHAT)
    assert not_allowed.status_code == 405
    assert not_allowed.get_json()["error"]["code"] == "method_not_allowed"
    assert not_allowed.headers["Allow"] == "OPTIONS, POST"
    too_big = client.post("/v1/chat/completions", json={**CHAT, "pad": "x" * 2_000})
    assert too_big.status_code == 413
    assert too_big.get_json()["error"]["code"] == "request_too_large"

    context.llm = fake_llm(KeyError("secret internal detail"))
    crashed = client.post("/v1/chat/completions", json=CHAT)
    assert crashed.status_code == 500
    error = crashed.get_json()["error"]
    request_id = crashed.headers["X-Request-ID"]
    assert error == {
        "type": "server_error",
        "message": f"internal error; quote request id {request_id} when reporting it",
        "param": None,
        "code": "internal_error",
    }
    for response in (not_found, not_allowed, too_big, crashed):
        assert set(response.get_json()) == {"error"}
        assert "Traceback" not in response.text and "secret" not in response.text


def test_an_unexpected_error_in_a_job_kind_check_is_a_generic_500(make_app, context):
    from api.server.app import create_app

    class Picky:
        def check(self, params):
            raise RuntimeError("secret internal detail")

        def __call__(self, *args):
            return {}

    app = create_app(
        settings=make_app().extensions["tunegraph"].settings,
        context_factory=lambda _: context,
        job_kinds={"picky": Picky()},
    )
    response = checked(app).test_client().post("/v1/jobs", json={"kind": "picky"})
    assert response.status_code == 500
    assert "Traceback" not in response.text and "secret" not in response.text
    app.extensions["tunegraph"].jobs.shutdown()


def test_request_ids_are_echoed_or_made_and_logged_as_json(client):
    given = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz", headers={"X-Request-ID": "no spaces <allowed>"})
    assert len(made.headers["X-Request-ID"]) == 32
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    try:
        client.get("/v1/models", headers={"X-Request-ID": "trace-7"})
    finally:
        logger.removeHandler(handler)
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["message"] == "request" and line["request_id"] == "trace-7"
    assert line["route"] == "/v1/models" and line["status"] == 200 and line["method"] == "GET"
    assert line["level"] == "INFO" and line["ms"] >= 0


def test_a_failed_model_load_is_a_generic_503_and_retried(make_app, settings):
    from api.server.app import create_app

    calls = []

    def failing(_settings):
        calls.append(1)
        raise FileNotFoundError("no model at /models/x")

    app = create_app(settings=settings, context_factory=failing, job_kinds={})
    client = checked(app).test_client()
    for _ in range(2):
        response = client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 503
        error = response.get_json()["error"]
        assert error["code"] == "models_unavailable"
        # the path stays in the log; the caller learns which settings to check
        assert "/models/x" not in response.text
        assert "TUNEGRAPH_TEXT_MODEL" in error["message"]
        assert "tunegraph config show" in error["message"]
    assert len(calls) == 2
    app.extensions["tunegraph"].jobs.shutdown()
