"""API keys, rate limits, the error envelope on every error, request ids and JSON logs."""

from __future__ import annotations

import io
import json
import logging

import pytest

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
    assert limited.headers["Retry-After"] == "20"  # 2 in any 20 s (6 a minute): the oldest leaves
    error = limited.get_json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    # another key has its own bucket; health checks are never limited
    assert client.get("/v1/models", headers={"Authorization": "Bearer b"}).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_a_burst_then_the_rate_in_a_moving_window(monkeypatch):
    """60 a minute with a burst of 2: 2 hits in any 2 s (counted by the `limits` library)."""
    now = [1_000.0]
    monkeypatch.setattr("time.time", lambda: now[0])
    limiter = RateLimiter(per_minute=60, burst=2)
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 2.0]
    assert limiter.take("other") == 0.0  # each key its own window
    now[0] += 1.5
    assert limiter.take("k") == 0.5 and limiter.wait("k") == 0.5
    now[0] += 0.51  # the first hit has left the window
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


def _redis_answers(url: str) -> bool:
    from limits.storage import storage_from_string

    try:
        return storage_from_string(url).check()
    except Exception:
        return False


LOCAL_REDIS = "redis://127.0.0.1:6379/15"


@pytest.mark.skipif(
    not _redis_answers(LOCAL_REDIS), reason="no Redis at 127.0.0.1:6379 (the CI machine runs one)"
)
def test_two_api_workers_share_one_limit_through_redis(make_app):
    """Each app is what one gunicorn worker (or API process) holds: with the limits in Redis,
    a key's burst is spent across both, not once per worker."""
    import uuid

    key = f"k-{uuid.uuid4().hex}"  # a fresh count in the shared database
    settings = {"api_keys": (key,), "rate_limit_per_minute": 6, "rate_limit_burst": 2}
    first, second = (
        make_app(rate_limit_storage=LOCAL_REDIS, **settings).test_client() for _ in range(2)
    )
    headers = {"Authorization": f"Bearer {key}"}
    assert first.get("/v1/models", headers=headers).status_code == 200
    assert second.get("/v1/models", headers=headers).status_code == 200
    limited = first.get("/v1/models", headers=headers)
    assert limited.status_code == 429 and 19 <= int(limited.headers["Retry-After"]) <= 20
    assert second.get("/v1/models", headers=headers).status_code == 429
    # in-process counting (the default) gives each worker its own count
    alone = [make_app(**settings).test_client() for _ in range(2)]
    assert [c.get("/v1/models", headers=headers).status_code for c in alone * 2] == [200] * 4


def test_a_limit_storage_that_does_not_answer_lets_requests_through(make_app, caplog):
    client = make_app(
        rate_limit_storage="redis://127.0.0.1:1/0", rate_limit_per_minute=60
    ).test_client()
    assert [client.get("/v1/models").status_code for _ in range(3)] == [200] * 3
    assert "the rate-limit storage does not answer" in caplog.text
