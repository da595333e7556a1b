"""The app on the embedded models: composition builds the AgentContext from settings (SmolLM2,
MiniLM, the claims database) on the first request, and a chat answer streams from it."""

from __future__ import annotations

import json

import pytest

from api import composition
from api.server.app import create_app
from api.settings import Settings

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def settings(model_store) -> Settings:
    # the session's model cache: SmolLM2's GGUF is converted once for every real-model test
    return Settings(home=model_store.config.cache_dir.parent, device="cpu", rate_limit_per_minute=0)


def test_composition_builds_what_exists(settings):
    context = composition.agent_context(settings)
    assert context.llm.model_label == "smollm2-135m-instruct"
    # nothing trained or ingested under this home: those parts stay out
    assert context.finetuned_adapter is None and context.damage_model is None
    # empty indexes count as missing until something is ingested (asked at each use)
    assert not context.available("manuals") and not context.available("claims_index")
    assert context.vision is None
    assert context.claims_db.count() == 0


def test_a_remote_openai_compatible_server_runs_the_chat_model(settings):
    import dataclasses

    from agents.backends.openai_compat import OpenAICompatibleBackend

    remote = dataclasses.replace(
        settings, llm_base_url="http://gpu-host:8000/v1", llm_model="meta-llama/Llama-3.1-8B"
    )
    context = composition.agent_context(remote)
    backend = context.llm.backend
    assert isinstance(backend, OpenAICompatibleBackend)
    assert (
        backend.base_url == "http://gpu-host:8000/v1" and backend.name == "meta-llama/Llama-3.1-8B"
    )
    # the server serves the fine-tuned adapter under the text_adapter name
    assert context.finetuned_adapter == "manual-lora" and backend.adapters() == ["manual-lora"]


def test_chat_on_the_real_model(settings):
    app = create_app(settings=settings, job_kinds={})
    client = app.test_client()
    body = {"model": "base", "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8}  # fmt: skip
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    answer = response.get_json()
    assert answer["choices"][0]["message"]["content"].strip()
    assert 1 <= answer["usage"]["completion_tokens"] <= 8
    assert answer["usage"]["prompt_tokens"] > 5

    stream = client.post("/v1/chat/completions", json={**body, "stream": True})
    parts = [p.removeprefix("data: ") for p in stream.text.split("\n\n") if p]
    assert parts[-1] == "[DONE]"
    text = "".join(json.loads(p)["choices"][0]["delta"].get("content", "") for p in parts[:-1])
    assert text.strip()
    ready = client.get("/readyz").get_json()["models"]
    assert ready["loaded"] and ready["components"]["llm"] == "smollm2-135m-instruct"
    app.extensions["tunegraph"].jobs.shutdown()
