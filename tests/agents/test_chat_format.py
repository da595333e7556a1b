from __future__ import annotations

import json

import llguidance
import pytest

from agents.backends.base import ChatRequest, GenerationError
from agents.backends.chat_format import (
    MAX_ARGUMENT_CHARS,
    grammar,
    parse_tool_calls,
    render_messages,
)

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_spec",
        "description": "Look up a specification.",
        "parameters": {
            "type": "object",
            "properties": {"item": {"type": "string"}, "count": {"type": "integer"}},
            "required": ["item"],
        },
    },
}
CONVERSATION = [
    {"role": "system", "content": "Answer from the manual."},
    {"role": "user", "content": "Torque?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "type": "function",
                "id": "call_1",
                "function": {"name": "lookup_spec", "arguments": '{"item": "torque"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "110 Nm"},
]


def test_without_template_support_tools_and_calls_are_written_as_text():
    messages, tools = render_messages(ChatRequest(CONVERSATION, tools=[TOOL]), False)
    assert tools is None
    assert messages[0]["content"].startswith("Answer from the manual.")
    assert '"name":"lookup_spec"' in messages[0]["content"]
    assert messages[2] == {
        "role": "assistant",
        "content": '<tool_call>{"name": "lookup_spec", "arguments": {"item": "torque"}}</tool_call>',
    }
    assert messages[3] == {"role": "user", "content": "<tool_response>\n110 Nm\n</tool_response>"}


def test_a_template_that_knows_tools_gets_them_untouched():
    messages, tools = render_messages(ChatRequest(CONVERSATION, tools=[TOOL]), True)
    assert tools == [TOOL]
    assert messages[2]["tool_calls"] == CONVERSATION[2]["tool_calls"]
    assert messages[0]["content"] == "Answer from the manual."


def test_tool_choice_none_hides_the_tools():
    messages, tools = render_messages(
        ChatRequest(CONVERSATION[:2], tools=[TOOL], tool_choice="none"), False
    )
    assert tools is None and "lookup_spec" not in messages[0]["content"]
    assert grammar(ChatRequest(CONVERSATION[:2], tools=[TOOL], tool_choice="none")) is None


@pytest.mark.parametrize("choice", ["auto", "required", "lookup_spec"])
def test_every_tool_grammar_is_valid(choice):
    lark = grammar(ChatRequest(CONVERSATION[:2], tools=[TOOL], tool_choice=choice))
    assert llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_lark(lark)) == ""
    schema = json.loads(lark.split("%json", 1)[1])
    arguments = schema["anyOf"][0]["properties"]["arguments"]
    assert arguments["additionalProperties"] is False
    assert arguments["properties"]["item"]["maxLength"] == MAX_ARGUMENT_CHARS
    assert ("answer" in lark) == (choice == "auto")


def test_an_unknown_tool_choice_names_the_bound_tools():
    with pytest.raises(GenerationError, match="lookup_spec"):
        grammar(ChatRequest(CONVERSATION[:2], tools=[TOOL], tool_choice="search"))


def test_single_call_grammar_when_parallel_calls_are_off():
    lark = grammar(ChatRequest(CONVERSATION[:2], tools=[TOOL], parallel_tool_calls=False))
    assert '("\\n" call)*' not in lark


def test_parse_drops_repeated_calls_and_reports_malformed_ones():
    one = '<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>'
    calls = parse_tool_calls(f"{one}\n{one}")
    assert [(c.name, c.arguments) for c in calls] == [("f", {"x": 1})]
    assert calls[0].id.startswith("call_")
    assert parse_tool_calls("just text") == []
    with pytest.raises(GenerationError, match="malformed tool call"):
        parse_tool_calls('<tool_call>{"name": "f"}</tool_call>')
