from __future__ import annotations

import json

import httpx
import pytest
from langchain_core.tools import tool

from agents.backends.base import ChatRequest, GenerationError
from agents.backends.openai_compat import OpenAICompatibleBackend
from agents.chat_model import LocalChatModel


@tool
def lookup_spec(item: str) -> str:
    """Look up a specification value."""
    return "110 Nm"


def sse(*chunks: dict) -> bytes:
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks]
    return ("".join(lines) + "data: [DONE]\n\n").encode()


def server(body: bytes, status: int = 200, seen: list | None = None):
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(json.loads(request.content))
        return httpx.Response(status, content=body, headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(handle)


def delta(content=None, tool_calls=None, finish=None) -> dict:
    d = {k: v for k, v in {"content": content, "tool_calls": tool_calls}.items() if v}
    return {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}


def test_text_deltas_usage_and_the_request_payload():
    seen: list = []
    body = sse(delta("The torque"), delta(" is 110 Nm."), delta(finish="stop"), USAGE)
    backend = OpenAICompatibleBackend(
        "http://vllm:8000/v1/",
        "base-model",
        adapters={"finetuned": "manual-lora"},
        api_key="k",
        transport=server(body, seen=seen),
    )
    llm = LocalChatModel(backend=backend).with_adapter("finetuned")
    message = llm.invoke("torque?", stop=["\n"], max_tokens=40)
    assert message.content == "The torque is 110 Nm."
    assert message.usage_metadata == {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15}
    assert message.response_metadata["finish_reason"] == "stop"
    payload = seen[0]
    assert payload["model"] == "manual-lora"
    assert payload["stop"] == ["\n"] and payload["max_tokens"] == 40 and payload["stream"]
    assert payload["messages"] == [{"role": "user", "content": "torque?"}]


def test_tool_call_fragments_are_assembled_into_tool_calls():
    seen: list = []
    fragments = [
        {"index": 0, "id": "call_a", "function": {"name": "lookup_spec", "arguments": '{"it'}},
        {"index": 0, "function": {"arguments": 'em": "torque"}'}},
    ]
    body = sse(
        delta(tool_calls=fragments[:1]), delta(tool_calls=fragments[1:]), delta(finish="tool_calls")
    )
    backend = OpenAICompatibleBackend("http://x/v1", "m", transport=server(body, seen=seen))
    message = (
        LocalChatModel(backend=backend)
        .bind_tools([lookup_spec], tool_choice="lookup_spec")
        .invoke("q")
    )
    assert message.tool_calls == [
        {"name": "lookup_spec", "args": {"item": "torque"}, "id": "call_a", "type": "tool_call"}
    ]
    assert seen[0]["tool_choice"] == {"type": "function", "function": {"name": "lookup_spec"}}
    assert seen[0]["tools"][0]["function"]["name"] == "lookup_spec"


def test_structured_output_asks_for_a_json_schema():
    seen: list = []
    body = sse(delta('{"ok": '), delta("true}"), delta(finish="stop"))
    backend = OpenAICompatibleBackend("http://x/v1", "m", transport=server(body, seen=seen))
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    assert LocalChatModel(backend=backend).with_structured_output(schema).invoke("q") == {
        "ok": True
    }
    assert seen[0]["response_format"]["json_schema"]["schema"] == schema


def test_server_errors_and_bad_tool_arguments_are_clear():
    error = json.dumps({"error": {"message": "model 'm' not found"}}).encode()
    backend = OpenAICompatibleBackend("http://x/v1", "m", transport=server(error, 404))
    with pytest.raises(GenerationError, match=r"answered 404: model 'm' not found"):
        list(backend.stream(ChatRequest([{"role": "user", "content": "q"}])))
    broken = [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{oops"}}]
    backend = OpenAICompatibleBackend(
        "http://x/v1", "m", transport=server(sse(delta(tool_calls=broken)))
    )
    with pytest.raises(GenerationError, match="not JSON"):
        list(backend.stream(ChatRequest([{"role": "user", "content": "q"}])))
    with pytest.raises(GenerationError, match="unknown adapter 'ft'"):
        list(backend.stream(ChatRequest([{"role": "user", "content": "q"}], adapter="ft")))


def test_an_unreachable_server_names_the_url():
    def refuse(request):
        raise httpx.ConnectError("connection refused")

    backend = OpenAICompatibleBackend(
        "http://nowhere:1/v1", "m", transport=httpx.MockTransport(refuse)
    )
    with pytest.raises(
        GenerationError, match=r"cannot reach the inference server at http://nowhere:1/v1"
    ):
        list(backend.stream(ChatRequest([{"role": "user", "content": "q"}])))
