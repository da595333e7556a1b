from __future__ import annotations

import json
import time
from dataclasses import dataclass

from agents.backends.base import Event, GenerationError, Usage
from agents.graphs import service_chat
from api.server.blueprints.assessments import CHOICES
from api.server.chat_request import MODES
from tests.agents.fakes import ScriptedBackend, fake_llm

QUESTION = {"role": "user", "content": "What is the hood hinge bolt torque?"}


def chat(client, **body):
    return client.post(
        "/v1/chat/completions", json={"model": "rag", "messages": [QUESTION], **body}
    )


def events(response) -> list[str]:
    return [part.removeprefix("data: ") for part in response.text.split("\n\n") if part]


def test_models_are_the_service_chat_modes_and_the_assessment_approaches(client):
    body = client.get("/v1/models").get_json()
    assert body["object"] == "list"
    assessments = [f"assessment-{approach}" for approach in CHOICES]
    assert [m["id"] for m in body["data"]] == [*service_chat.MODES, *assessments]
    assert list(MODES) == list(service_chat.MODES)
    assert all(m["object"] == "model" and m["owned_by"] == "tunegraph" for m in body["data"])


def test_chat_refuses_an_assessment_approach_with_a_pointer_to_assessments(client, context):
    for approach in CHOICES:
        response = chat(client, model=f"assessment-{approach}")
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert (error["param"], error["code"]) == ("model", "model_not_chat")
        assert f"POST /v1/assessments with approach={approach}" in error["message"]
    assert context.llm.backend.requests == []


def test_a_completion_is_openai_shaped_with_usage_and_sources(client, context):
    context.llm = fake_llm("It is 24 Nm.")
    response = chat(client, temperature=0.2, top_p=0.9, max_tokens=32, stop=["\n\n"])
    assert response.status_code == 200
    body = response.get_json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "rag"
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "It is 24 Nm."},
         "finish_reason": "stop"}
    ]  # fmt: skip
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
    assert body["tunegraph"]["sources"] == ["blk-hood-dent", "blk-torque"]
    assert set(body["tunegraph"]["timings_ms"]) == {"retrieve", "answer"}
    # The request's sampling reached the model; the shared context's model is untouched.
    (request,) = context.llm.backend.requests
    assert (request.temperature, request.top_p, request.max_tokens) == (0.2, 0.9, 32)
    assert request.stop == ["\n\n"] and request.adapter is None
    assert "Hood hinge bolt torque 24 Nm." in request.messages[-1]["content"]


def test_finetuned_and_agent_modes_use_the_adapter(client, context):
    context.llm = fake_llm("Base.", "Tuned.", "From the manual.")
    answers = [
        chat(client, model=model).get_json()["choices"][0]["message"]["content"]
        for model in ("base", "finetuned", "agent")
    ]
    assert answers == ["Base.", "Tuned.", "From the manual."]
    assert [r.adapter for r in context.llm.backend.requests] == [None, "ft", "ft"]


def test_streaming_sends_deltas_usage_and_done(client, context):
    context.llm = fake_llm("It is 24 Nm.")
    response = chat(client, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    data = events(response)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "It is 24 Nm."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}


def test_streaming_without_include_usage_has_no_usage_chunk(client, context):
    context.llm = fake_llm("Yes.")
    chunks = [json.loads(d) for d in events(chat(client, stream=True))[:-1]]
    assert all(c["choices"] and "usage" not in c for c in chunks)


def test_a_generation_error_mid_stream_is_an_error_event(client, context):
    context.llm = fake_llm(GenerationError("the backend ran out of memory"))
    data = events(chat(client, stream=True))
    assert data[-1] == "[DONE]"
    error = json.loads(data[-2])["error"]
    assert error["code"] == "generation_failed" and "out of memory" in error["message"]


@dataclass
class SlowBackend(ScriptedBackend):
    """Would say ``words`` words, one per ``delay_s``; counts what it generated."""

    delay_s: float = 0.4
    words: int = 50
    generated: int = 0
    closed: bool = False

    def stream(self, request):
        try:
            for i in range(self.words):
                time.sleep(self.delay_s)
                self.generated += 1
                yield Event(text=f" w{i}")
            yield Event(finish_reason="stop", usage=Usage(1, self.words))
        finally:
            self.closed = True


def test_generation_stops_at_the_timeout(make_app, context):
    from agents.chat_model import LocalChatModel

    backend = SlowBackend()
    context.llm = LocalChatModel(backend=backend)
    client = make_app(generation_timeout_s=1).test_client()
    response = chat(client)
    assert response.status_code == 504
    error = response.get_json()["error"]
    assert error["code"] == "timeout" and "TUNEGRAPH_GENERATION_TIMEOUT_S" in error["message"]
    # 1 s at 0.4 s a word: the word that crossed the deadline is the last one generated (a
    # slow machine may get there sooner, never later), and the backend's stream was closed
    assert 1 <= backend.generated <= 3 and backend.closed


def test_bad_requests_name_the_parameter(client, context):
    cases = [
        ({"model": "gpt-4", "messages": [QUESTION]}, 404, "model", "model_not_found"),
        ({"messages": [QUESTION]}, 400, "model", "missing_model"),
        ({"model": "rag", "messages": []}, 400, "messages", "invalid_value"),
        ({"model": "rag", "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0]",
         "invalid_value"),
        ({"model": "rag", "messages": [{"role": "system", "content": "x"}]}, 400, "messages",
         "invalid_value"),
        ({"model": "rag", "messages": [QUESTION], "max_tokens": 5000}, 400, "max_tokens",
         "invalid_value"),
        ({"model": "rag", "messages": [QUESTION], "max_tokens": 0}, 400, "max_tokens",
         "invalid_value"),
        ({"model": "rag", "messages": [QUESTION], "temperature": 3}, 400, "temperature",
         "invalid_value"),
        ({"model": "rag", "messages": [QUESTION], "stop": ["a", "b", "c", "d", "e"]}, 400, "stop",
         "invalid_value"),
        ({"model": "rag", "messages": [QUESTION], "tools": [{"type": "function"}]}, 400, "tools",
         "unsupported_parameter"),
        ({"model": "rag", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
         400, "messages[0].content", "invalid_value"),
        ([1, 2], 400, None, "invalid_json"),
    ]  # fmt: skip
    for body, status, param, code in cases:
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == status, body
        error = response.get_json()["error"]
        assert (error["param"], error["code"]) == (param, code), body
        assert error["message"] and error["type"] in ("invalid_request_error", "not_found_error")
    assert context.llm.backend.requests == []  # none of them reached the model


def test_malformed_json_and_a_wrong_content_type_are_400(client):
    response = client.post(
        "/v1/chat/completions", data='{"model": "rag",', content_type="application/json"
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == "the body is not valid JSON"
    response = client.post("/v1/chat/completions", data="model=rag")
    assert response.status_code == 400
    assert "Content-Type: application/json" in response.get_json()["error"]["message"]


def test_a_too_long_prompt_is_refused_before_the_model(make_app, context):
    client = make_app(max_prompt_chars=20).test_client()
    response = chat(client)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "context_length_exceeded" and "limit of 20" in error["message"]
    assert context.llm.backend.requests == []


def test_missing_graph_dependencies_are_503(client, context):
    context.manuals = None
    context.llm = fake_llm("x")
    response = chat(client)
    assert response.status_code == 503
    assert "needs manuals" in response.get_json()["error"]["message"]


def test_streaming_the_agent_sends_only_the_final_answer(client, context):
    context.llm = fake_llm("Tighten to 24 Nm.")
    data = events(chat(client, model="agent", stream=True))
    chunks = [json.loads(d) for d in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Tighten to 24 Nm."
    assert all(set(c["choices"][0]["delta"]) <= {"role", "content"} for c in chunks)


def test_a_developer_message_is_a_system_message_and_n_may_be_null(client, context):
    context.llm = fake_llm("Short.")
    developer = {"role": "developer", "content": "Answer in one word."}
    response = chat(client, model="base", messages=[developer, QUESTION], n=None)
    assert response.status_code == 200
    assert response.get_json()["choices"][0]["message"]["content"] == "Short."


def test_max_tokens_defaults_within_the_limit_and_seed_reaches_the_sampler(make_app, context):
    context.llm = fake_llm("One.", "Two.")
    client = make_app(max_tokens_limit=16).test_client()
    assert chat(client, seed=7).status_code == 200
    assert chat(client, temperature=0.7).status_code == 200
    first, second = context.llm.backend.requests
    assert first.max_tokens == 16  # the model's default (256) is above the limit
    assert first.seed == 7
    assert isinstance(second.seed, int)  # a fresh seed: sampled answers vary between requests
    assert chat(client, seed="7").get_json()["error"]["param"] == "seed"
