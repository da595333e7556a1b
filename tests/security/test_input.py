"""Hostile input gets a 4xx in the JSON error envelope, never a 5xx or an HTML page: deep JSON,
oversize URLs, headers and bodies (through Flask and through gunicorn), and API-key guessing,
which is slowed down per client address. /metrics can need a key."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from api.server.blueprints import MAX_JSON_DEPTH, json_depth_exceeds
from api.server.openapi import spec
from api.server.protection import MAX_HEADER_FIELD_BYTES, MAX_TARGET_BYTES, RateLimiter
from api.settings import Settings

JSON = {"Content-Type": "application/json"}


def nested(depth: int) -> str:
    """A job request whose JSON nests ``depth`` levels in all (the body and params count)."""
    return (
        '{"kind": "count", "params": {"n": 1, "deep": '
        + "[" * (depth - 2)
        + "]" * (depth - 2)
        + "}}"
    )


def error_code(response) -> str:
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    return response.json()["error"]["code"]


# ---- deep JSON ------------------------------------------------------------------------------


def test_json_nested_100000_levels_is_a_400_not_a_recursion_error(make_app):
    client = make_app().test_client()
    deep = "[" * 100_000 + "]" * 100_000
    for path in ("/v1/jobs", "/v1/chat/completions"):
        response = client.post(path, data=deep, headers=JSON)
        assert response.status_code == 400, path
        error = response.get_json()["error"]
        assert error["code"] == "invalid_json"
        assert f"more than {MAX_JSON_DEPTH} levels deep" in error["message"]


def test_json_depth_limit_is_exact_and_ignores_brackets_in_strings(make_app):
    client = make_app().test_client()
    assert client.post("/v1/jobs", data=nested(MAX_JSON_DEPTH), headers=JSON).status_code == 202
    refused = client.post("/v1/jobs", data=nested(MAX_JSON_DEPTH + 1), headers=JSON)
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "invalid_json"
    brackets = '{"kind": "count", "params": {"n": 1, "note": "' + "[{" * 500 + '\\"]"}}'
    assert client.post("/v1/jobs", data=brackets, headers=JSON).status_code == 202


def test_json_depth_scan_is_linear_on_escaped_quotes():
    """Strings are skipped in one pass: escaped quotes cannot make the scan quadratic."""
    text = "[" * (MAX_JSON_DEPTH + 1) + '"' + '\\"' * 200_000 + '"'
    started = time.perf_counter()
    assert json_depth_exceeds('"' + '\\"' * 200_000) is False
    assert json_depth_exceeds(text) is True
    assert time.perf_counter() - started < 1.0


# ---- oversize URL, headers and body (Flask) -------------------------------------------------


def test_oversize_url_headers_and_body_answer_414_431_413_in_the_envelope(make_app):
    client = make_app(max_request_bytes=1_000).test_client()
    long_url = client.get("/v1/jobs?state=" + "a" * MAX_TARGET_BYTES)
    assert long_url.status_code == 414 and long_url.get_json()["error"]["code"] == "uri_too_long"
    assert client.get("/v1/jobs?state=" + "a" * 100).status_code == 400  # short: the route's own

    big_header = client.get("/healthz", headers={"X-Big": "a" * MAX_HEADER_FIELD_BYTES})
    assert big_header.status_code == 431
    assert big_header.get_json()["error"] == {
        "type": "invalid_request_error",
        "message": "the request headers are too large: at most 100 fields of 8,190 bytes each "
        "are accepted",
        "param": "X-Big",
        "code": "headers_too_large",
    }
    many = client.get("/healthz", headers={f"X-H{i}": "a" for i in range(101)})
    assert many.status_code == 431 and many.get_json()["error"]["code"] == "headers_too_large"

    # a body over the limit is refused before any route reads it, on every path
    body = client.delete("/v1/jobs/job_x", data="x" * 2_000)
    assert body.status_code == 413 and body.get_json()["error"]["code"] == "request_too_large"
    assert "at most 1,000" in body.get_json()["error"]["message"]
    # a chunked body (no Content-Length), which Werkzeug alone would cut at the limit
    chunked = {"Transfer-Encoding": "chunked", **JSON}
    for size, status in ((2_000, 413), (900, 202)):
        stream = io.BytesIO(b'{"kind": "count", "params": {"note": "' + b"x" * size + b'"}}')
        response = client.post(
            "/v1/jobs",
            input_stream=stream,
            headers=chunked,
            environ_overrides={"wsgi.input_terminated": True},  # as a server that decodes it
        )
        assert response.request.content_length is None
        assert response.status_code == status


# ---- API keys -------------------------------------------------------------------------------


def test_401_carries_www_authenticate_bearer(make_app):
    client = make_app(api_keys=("k-one",)).test_client()
    missing = client.get("/v1/models")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="tunegraph"'
    wrong = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer ")
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]


def test_failed_key_checks_slow_the_address_down_but_not_others(make_app):
    client = make_app(api_keys=("k-one",), auth_failures_per_minute=3).test_client()
    good, bad = {"Authorization": "Bearer k-one"}, {"Authorization": "Bearer guess"}
    assert client.get("/v1/models", headers=good).status_code == 200  # a success costs nothing
    assert [client.get("/v1/models", headers=bad).status_code for _ in range(3)] == [401] * 3
    for headers in (bad, good, {}):  # now the key is not even checked
        limited = client.get("/v1/models", headers=headers)
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "60"  # 3 in any minute: the oldest leaves
        error = limited.get_json()["error"]
        assert error["code"] == "too_many_auth_failures" and error["type"] == "rate_limit_error"
    other = {"REMOTE_ADDR": "10.0.0.7"}
    assert client.get("/v1/models", headers=good, environ_base=other).status_code == 200
    assert client.get("/v1/models", headers=bad, environ_base=other).status_code == 401
    assert client.get("/healthz").status_code == 200

    unlimited = make_app(api_keys=("k-one",), auth_failures_per_minute=0).test_client()
    assert {unlimited.get("/v1/models", headers=bad).status_code for _ in range(30)} == {401}


def test_auth_failure_buckets_refill_and_waiting_takes_no_token(monkeypatch):
    now = [1_000.0]
    monkeypatch.setattr("time.time", lambda: now[0])
    failures = RateLimiter(per_minute=6, burst=2, namespace="auth-failures")
    assert failures.wait("a") == 0.0  # an address never seen
    failures.take("a"), failures.take("a")
    assert failures.wait("a") == 20.0 and failures.wait("a") == 20.0
    now[0] += 20.0
    assert failures.wait("a") == 0.0 and failures.wait("b") == 0.0


def test_metrics_needs_a_key_when_configured(make_app):
    guarded = make_app(api_keys=("k-one",), metrics_require_key=True).test_client()
    refused = guarded.get("/metrics")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.get_json()["error"]["code"] == "missing_api_key"
    assert guarded.get("/metrics", headers={"Authorization": "Bearer no"}).status_code == 401
    allowed = guarded.get("/metrics", headers={"Authorization": "Bearer k-one"})
    assert allowed.status_code == 200 and b"tunegraph_http_requests" in allowed.data
    assert guarded.get("/healthz").status_code == 200
    # without keys there is nothing to check against: /metrics stays open
    assert make_app(metrics_require_key=True).test_client().get("/metrics").status_code == 200


def test_spec_documents_the_refusals_and_the_metrics_key():
    keyed = Settings(api_keys=("k",), metrics_require_key=True)
    paths = spec(keyed, [])["paths"]
    for path, item in paths.items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            assert {"413", "414", "431"} <= set(operation["responses"]), (path, method)
            if "security" in operation:
                challenge = operation["responses"]["401"]["headers"]["WWW-Authenticate"]
                assert challenge["required"] is True
                assert "Retry-After" in operation["responses"]["429"]["headers"]
    assert paths["/metrics"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in spec(Settings(), [])["paths"]["/metrics"]["get"]


# ---- the same under gunicorn ----------------------------------------------------------------


@contextmanager
def gunicorn(tmp_path, **env: str) -> Iterator[str]:
    """``tunegraph serve`` (gunicorn) on a free port, with ``TUNEGRAPH_*`` ``env``: its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environ = {
        **os.environ,
        "TUNEGRAPH_HOME": str(tmp_path / "home"),
        "TUNEGRAPH_PORT": str(port),
        **{f"TUNEGRAPH_{name.upper()}": value for name, value in env.items()},
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "api.cli.main", "serve", "--threads", "16"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server never answered /healthz"
                time.sleep(0.1)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert "Traceback" not in output


def test_gunicorn_answers_every_oversize_request_with_the_envelope(tmp_path):
    with gunicorn(tmp_path, max_request_bytes="1000") as url, httpx.Client(base_url=url) as http:
        # the app's limit, and past what gunicorn itself reads (its worker answers)
        for size in (MAX_TARGET_BYTES + 10, 20_000):
            assert error_code(http.get("/v1/jobs?state=" + "a" * size)) == "uri_too_long"
        for size in (MAX_HEADER_FIELD_BYTES, 40_000):
            response = http.get("/healthz", headers={"X-Big": "a" * size})
            assert response.status_code == 431 and error_code(response) == "headers_too_large"
        for count in (101, 300):
            response = http.get("/healthz", headers={f"X-H{i}": "a" for i in range(count)})
            assert response.status_code == 431 and error_code(response) == "headers_too_large"

        declared = http.post("/v1/jobs", content=b"{" * 2_000, headers=JSON)
        assert declared.status_code == 413 and error_code(declared) == "request_too_large"
        parts = [b'{"kind": "count", "params": {"note": "', b"x" * 2_000, b'"}}']
        chunked = http.post("/v1/jobs", content=iter(parts), headers=JSON)  # no Content-Length
        assert chunked.status_code == 413 and error_code(chunked) == "request_too_large"
        deep = http.post("/v1/jobs", content=b"[" * 400 + b"]" * 400, headers=JSON)
        assert deep.status_code == 400 and error_code(deep) == "invalid_json"
        assert http.get("/v1/jobs").json() == {"object": "list", "data": []}
