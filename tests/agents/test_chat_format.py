from __future__ import annotations

import json

import llguidance
import pytest

from agents.backends.base import ChatRequest, GenerationError
from agents.backends.chat_format import (
    MAX_ARGUMENT_CHARS,
    grammar,
    grammar_problem,
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


def _with_parameters(parameters):
    return {"type": "function", "function": {"name": "lookup", "parameters": parameters}}


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        (ChatRequest([], tools=[TOOL], tool_choice="required"), None),
        (ChatRequest([], response_schema={"type": "object"}), None),
        (ChatRequest([]), None),  # free text: no grammar
        (ChatRequest([], tools=[TOOL], tool_choice="search"), "not one of the bound tools"),
        (
            ChatRequest([], tools=[_with_parameters({"type": "object", "not": {}})]),
            'Unimplemented keys: ["not"]',
        ),
        (
            # malformed parts are llguidance's to name, not a crash while closing the schema
            ChatRequest([], tools=[_with_parameters({"type": "object", "properties": 5})]),
            "properties must be an object",
        ),
        (
            ChatRequest([], tools=[_with_parameters({"type": "object", "anyOf": 3})]),
            "anyOf must be an array",
        ),
        (
            ChatRequest([], response_schema={"type": "integer", "minimum": 5, "maximum": 1}),
            "Unsatisfiable schema: minimum (5) is greater than maximum (1)",
        ),
        (
            ChatRequest([], response_schema={"type": "string", "pattern": "(?=a)"}),
            "look-around",
        ),
    ],
)
def test_grammar_problem_says_why_a_schema_cannot_constrain_the_answer(request_, problem):
    found = grammar_problem(request_)
    if problem is None:
        assert found is None
    else:
        assert problem in found
        assert "%json" not in found and "\n" not in found  # the reason, not the grammar


def test_grammar_problem_agrees_with_the_matcher_a_tokenizer_builds():
    """What the server checks without a tokenizer is what the backend compiles: a request
    it lets through compiles, and one it refuses fails to compile."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from finetune.constrained import GrammarError, ll_tokenizer, matcher

    # a byte-level tokenizer with one token per byte: all a grammar needs to compile
    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    raw = Tokenizer(models.BPE({**vocab, "<eos>": len(vocab)}, [], unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>")
    ll = ll_tokenizer(tokenizer, tokenizer.eos_token_id)
    for request in (
        ChatRequest([], tools=[TOOL], tool_choice="required"),
        ChatRequest([], response_schema={"type": "array", "uniqueItems": True}),
        ChatRequest([], tools=[_with_parameters({"type": "object", "required": "x"})]),
    ):
        problem = grammar_problem(request)
        try:
            matcher(ll, grammar(request))
            compiled = True
        except GrammarError:
            compiled = False
        assert compiled == (problem is None), (request, problem)
