"""A chat answer's ``tunegraph`` field: the passages retrieval used (with their text) and the
tools the agent called (arguments, status, what each found), in the JSON answer and in the
usage chunk of a streamed one."""

from __future__ import annotations

import json

from tests.agents.conftest import MANUAL
from tests.agents.fakes import fake_llm

QUESTION = "What is the hood hinge bolt torque?"
PASSAGES = [{"id": hit.id, "text": hit.text} for hit in MANUAL]


def details(client, mode: str, question: str = QUESTION, stream: bool = False) -> dict:
    body = {"model": mode, "messages": [{"role": "user", "content": question}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    if not stream:
        return response.get_json()["tunegraph"]
    chunks = [e.removeprefix("data: ") for e in response.text.split("\n\n") if e]
    (usage,) = [json.loads(c) for c in chunks[:-1] if "usage" in json.loads(c)]
    return usage["tunegraph"]


def test_a_retrieval_mode_names_its_passages_with_their_text(client, context):
    context.llm = fake_llm("24 Nm.")
    found = details(client, "rag")
    assert found["sources"] == ["blk-hood-dent", "blk-torque"]
    assert [{"id": p["id"], "text": p["text"]} for p in found["passages"]] == PASSAGES
    assert [p["score"] for p in found["passages"]] == [hit.score for hit in MANUAL]
    assert found["tool_calls"] == []


def test_the_agent_mode_names_each_tool_call_and_what_it_found(client, context):
    for stream in (False, True):
        context.llm = fake_llm("24 Nm.")
        found = details(client, "agent", stream=stream)
        # the rule router sent the torque question to the spec lookup: one SPEC passage
        assert found["tool_calls"] == [
            {
                "name": "lookup_spec",
                "arguments": {"query": QUESTION},
                "status": "success",
                "passages": PASSAGES[1:],
                "message": None,
            }
        ]
        assert found["passages"] == [] and found["sources"] == []


def test_a_lookup_that_found_nothing_and_a_failed_call_say_so(client, context):
    found = details(client, "agent", "What does P0117 mean?")  # no troubleshooting entry
    (call,) = found["tool_calls"]
    assert (call["name"], call["arguments"], call["status"]) == (
        "lookup_fault_code",
        {"code": "P0117"},
        "success",
    )
    assert call["passages"] == []
    assert call["message"] == "No troubleshooting entry mentions 'P0117'."

    context.router = "model"  # the model picks a tool that does not exist, then answers
    context.llm = fake_llm([("nope", {"query": "x"})], "Sorry.")
    (call,) = details(client, "agent")["tool_calls"]
    assert (call["name"], call["arguments"], call["status"]) == ("nope", {"query": "x"}, "error")
    assert call["message"].startswith("Error: no tool named 'nope'")
