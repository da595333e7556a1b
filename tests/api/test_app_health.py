"""Health, readiness, metrics, the OpenAPI spec and the app's light import."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

from api.server.blueprints import ui
from tests.agents.fakes import fake_llm
from tests.api.conftest import wait_for

CHAT = {"model": "rag", "messages": [{"role": "user", "content": "Hood bolt torque?"}]}


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def ready(client, timeout_s: float = 5.0):
    """Poll /readyz until it answers 200 (or the time is up); the last response."""
    deadline = time.monotonic() + timeout_s
    while (response := client.get("/readyz")).status_code != 200:
        if time.monotonic() > deadline:
            return response
        time.sleep(0.02)
    return response


def test_readyz_is_503_until_a_warm_up_it_starts_has_loaded_the_models(make_app, context):
    gate = threading.Event()

    def slow_factory(_settings):
        assert gate.wait(5)
        return context

    app = make_app()
    app.extensions["tunegraph"].runtime._factory = slow_factory
    client = app.test_client()
    first = client.get("/readyz")
    assert first.status_code == 503 and first.headers["Retry-After"] == "5"
    error = first.get_json()["error"]
    assert error["code"] == "models_loading"
    assert "loading them started in the background" in error["message"]
    again = client.get("/readyz").get_json()["error"]["message"]
    assert "they are loading in the background" in again  # one warm-up, not one per probe
    gate.set()

    loaded = ready(client)
    assert loaded.status_code == 200
    models = loaded.get_json()["models"]
    assert models["loaded"] is True
    assert models["configured"] == {
        "llm": "smollm2-135m-instruct",
        "finetuned_adapter": None,  # none trained under the temp home
        "damage_model": None,
        "vision": None,
    }
    assert models["components"] == {
        "llm": "fake-llm",
        "finetuned_adapter": "ft",
        "manuals": "FakeRetriever",
        "claims_index": "FakeRetriever",
        "claims_db": "ClaimsDatabase",
        "damage_model": "fake-damage@1",
        "vision": None,
    }
    # the warmed-up models serve requests
    context.llm = fake_llm("24 Nm.")
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_readyz_after_a_failed_warm_up_starts_another(make_app, context):
    outcomes = [FileNotFoundError("/secret/model.gguf"), context]

    def flaky(_settings):
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    app = make_app()
    runtime = app.extensions["tunegraph"].runtime
    runtime._factory = flaky
    client = app.test_client()
    assert client.get("/readyz").status_code == 503
    deadline = time.monotonic() + 5
    while runtime.warming or not runtime.load_failed:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    retry = client.get("/readyz")
    assert retry.status_code == 503 and "/secret" not in retry.text
    assert "the last load failed (see the server log)" in retry.get_json()["error"]["message"]
    assert ready(client).status_code == 200


def test_readyz_is_503_when_the_database_is_gone(client, app):
    app.extensions["tunegraph"].jobs.store.engine.dispose()
    app.extensions["tunegraph"].jobs.store.engine = _broken_engine()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unavailable"


def _broken_engine():
    from sqlalchemy import create_engine

    return create_engine("sqlite:////nonexistent-dir/x/jobs.db")


def test_metrics_count_requests_latency_tokens_and_jobs(client, context):
    context.llm = fake_llm("It is 24 Nm.")
    client.post("/v1/chat/completions", json=CHAT)
    client.get("/v1/models")
    client.get("/v1/no-such-route")
    job = client.post("/v1/jobs", json={"kind": "count", "params": {"n": 1}}).get_json()
    wait_for(client, job["id"], "succeeded")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    text = response.text
    assert (
        'tunegraph_http_requests_total{method="POST",model="rag",'
        'route="/v1/chat/completions",status="200"} 1.0' in text
    )
    assert 'route="unmatched",status="404"' in text  # unknown paths do not make new series
    assert (
        'tunegraph_http_request_duration_seconds_count{method="GET",model="",route="/v1/models"} 1.0'
        in text
    )
    assert 'tunegraph_tokens_total{kind="completion",model="rag"} 4.0' in text
    assert 'tunegraph_tokens_total{kind="prompt",model="rag"} 10.0' in text
    assert 'tunegraph_jobs{state="succeeded"} 1.0' in text
    assert 'tunegraph_jobs{state="running"} 0.0' in text


def test_each_app_has_its_own_metrics(make_app):
    first, second = make_app().test_client(), make_app().test_client()
    first.get("/v1/models")
    assert 'route="/v1/models"' in first.get("/metrics").text
    assert 'route="/v1/models"' not in second.get("/metrics").text


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_openapi_documents_every_route_and_method(app, client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"] == "3.1.0"
    rules = [
        rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.partition(".")[0] not in ui.PAGE_BLUEPRINTS  # HTML pages: no API
    ]
    assert len(rules) >= 10
    for rule in rules:
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        assert path in spec["paths"], rule.rule
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in spec["paths"][path], (rule.rule, method)
    schemas = spec["components"]["schemas"]
    for ref in _refs(spec):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert {"Assessment", "ClaimContext", "Damage", "Error"} <= set(schemas)
    assert schemas["JobRequest"]["properties"]["kind"]["enum"] == ["broken", "count", "release"]
    chat = schemas["ChatCompletionRequest"]["properties"]
    assert chat["max_tokens"]["maximum"] == 1024
    assert chat["model"]["enum"] == ["base", "rag", "finetuned", "finetuned-rag", "agent"]
    images = spec["paths"]["/v1/assessments"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]["schema"]["properties"]["images"]
    assert images["maxItems"] == 8


def test_importing_the_app_loads_no_model_library():
    code = (
        "import sys, api.server.app; "
        "print(sorted(m for m in ('torch', 'transformers', 'langgraph', 'langchain_core', "
        "'agents', 'lancedb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_readyz_sees_a_trained_adapter_and_damage_model(client, settings):
    (settings.adapters_dir / "manual-lora").mkdir(parents=True)
    (settings.adapters_dir / "manual-lora" / "adapter_config.json").write_text("{}")
    (settings.vision_dir / "damage-model").mkdir(parents=True)
    (settings.vision_dir / "damage-model" / "model.safetensors").write_bytes(b"")
    configured = ready(client).get_json()["models"]["configured"]
    assert configured["finetuned_adapter"] == "manual-lora"
    assert configured["damage_model"] == str(settings.vision_dir / "damage-model")
