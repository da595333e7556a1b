"""Client tools over the OpenAI API, against a live server: the official openai SDK and a
LangGraph ReAct agent on langchain-openai's ``ChatOpenAI(...).bind_tools(...)``, as a client
would write them.

Most tests serve a 2-layer random-weight Llama with SmolLM2's tokenizer and chat template (and
a random LoRA adapter as ``finetuned``): its choices are noise, so the tests assert what the
grammar guarantees — the shape of calls and JSON answers — never which tool a free choice
picks. The ReAct agent on a scripted model checks the round trip exactly: the tool the agent
bound, the call the server returned, the Python tool's result in the next request.
"""

from __future__ import annotations

import json
from typing import Literal

import httpx
import pytest
from pydantic import BaseModel, Field

from agents.backends.base import ChatRequest
from agents.backends.chat_format import render_messages, supports_tools
from agents.backends.transformers import TransformersBackend
from agents.chat_model import LocalChatModel
from tests.agents.fakes import ScriptedBackend
from tests.api.conftest import serving

openai = pytest.importorskip("openai")
real_model = pytest.mark.real_model  # the SmolLM2 tokenizer and chat template

SMOLLM2 = "smollm2-135m-instruct"  # its tokenizer and chat template
PARTS = ["hood", "door", "trunk"]
TORQUE = {
    "type": "function",
    "function": {
        "name": "lookup_torque",
        "description": "The tightening torque of a part's bolts, from the service manual.",
        "parameters": {
            "type": "object",
            "properties": {
                "part": {"type": "string", "enum": PARTS},
                "bolts": {"type": "integer", "minimum": 1, "maximum": 8},
            },
            "required": ["part", "bolts"],
        },
    },
}
FAULT = {
    "type": "function",
    "function": {
        "name": "lookup_fault_code",
        "description": "What an OBD fault code means.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "pattern": "^P[0-9]{4}$"}},
            "required": ["code"],
        },
    },
}
TOOLS = [TORQUE, FAULT]
ASK = [{"role": "user", "content": "What is the hood hinge bolt torque?"}]


class Verdict(BaseModel):
    severity: Literal["minor", "moderate", "severe"]
    cost: int = Field(ge=0, le=9999)


def check_call(call) -> dict:
    """A returned tool call (SDK object) that follows its tool's schema; its arguments."""
    assert call.type == "function" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    if call.function.name == "lookup_torque":
        assert set(arguments) == {"part", "bolts"}
        assert arguments["part"] in PARTS and 1 <= arguments["bolts"] <= 8
    else:
        assert call.function.name == "lookup_fault_code"
        assert set(arguments) == {"code"} and len(arguments["code"]) == 5
        assert arguments["code"][0] == "P" and arguments["code"][1:].isdigit()
    return arguments


# ---- a tiny random-weight model behind the live server --------------------------------------


class RecordingBackend(TransformersBackend):
    """The real backend, recording each request it generates for."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[ChatRequest] = []

    def stream(self, request):
        self.requests.append(request)
        yield from super().stream(request)


@pytest.fixture(scope="module")
def tokenizer(model_store):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_store.checkpoint_dir(SMOLLM2)))


@pytest.fixture(scope="module")
def tiny(tokenizer, tmp_path_factory) -> RecordingBackend:
    """The tiny Llama with a random LoRA adapter ``ft`` (so ``finetuned`` answers otherwise)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from tests.finetune.test_text_lora import tiny_llama_config

    def model():
        torch.manual_seed(0)
        return LlamaForCausalLM(tiny_llama_config(tokenizer, max_position_embeddings=1024))

    peft = get_peft_model(model(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    torch.manual_seed(1)
    for key, weight in peft.named_parameters():
        if "lora_B" in key:
            torch.nn.init.normal_(weight, std=2.0)
    folder = tmp_path_factory.mktemp("adapter-ft")
    peft.save_pretrained(folder)
    return RecordingBackend(model(), tokenizer, "tiny", adapters={"ft": folder})


@pytest.fixture
def live(make_app, context, tiny) -> str:
    tiny.requests.clear()
    context.llm = LocalChatModel(backend=tiny, max_tokens=48)
    with serving(make_app(generation_timeout_s=120)) as url:
        yield url


@pytest.fixture
def sdk(live):
    return openai.OpenAI(base_url=f"{live}/v1", api_key="unused", max_retries=0)


def prompt_tokens(backend, **request) -> int:
    """The prompt's tokens as the backend counts them (the chat template, the tool listing)."""
    return backend.count_tokens(ChatRequest(**request))


@real_model
@pytest.mark.parametrize("choice", ["required", "lookup_fault_code"])
def test_required_and_named_tool_choice_return_calls_that_follow_the_schema(sdk, tiny, choice):
    named = {"type": "function", "function": {"name": choice}}
    completion = sdk.chat.completions.create(
        model="base",
        messages=ASK,
        tools=TOOLS,
        tool_choice=choice if choice == "required" else named,
        max_tokens=60,
    )
    (answer,) = completion.choices
    assert answer.finish_reason == "tool_calls"
    assert answer.message.content is None and answer.message.tool_calls
    for call in answer.message.tool_calls:
        check_call(call)
    if choice != "required":
        assert {c.function.name for c in answer.message.tool_calls} == {choice}
    # usage is exact: the prompt with its tool listing, the tokens the call took
    (request,) = tiny.requests
    assert request.tool_choice == choice and request.adapter is None
    usage = completion.usage
    assert usage.prompt_tokens == prompt_tokens(tiny, messages=ASK, tools=TOOLS)
    assert usage.prompt_tokens > prompt_tokens(tiny, messages=ASK)
    assert 0 < usage.completion_tokens <= 60
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert completion.tunegraph["tool_calls"] == []  # the client's calls are not tunegraph's


@real_model
def test_streamed_tool_calls_arrive_in_the_sdks_shape_and_match_the_plain_answer(live, sdk, tiny):
    body = {"model": "finetuned", "messages": ASK, "tools": TOOLS, "tool_choice": "required"}
    plain = sdk.chat.completions.create(**body, max_tokens=60)
    # the raw events: per call its index, id, type and name first, then its arguments
    stream = {**body, "max_tokens": 60, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(base_url=live, timeout=120) as http:
        events = http.post("/v1/chat/completions", json=stream).text.split("\n\n")
    chunks = [json.loads(e.removeprefix("data: ")) for e in events if e and "[DONE]" not in e]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    parts = [part for delta in deltas for part in delta.get("tool_calls", [])]
    assert len(parts) == 2 * len(plain.choices[0].message.tool_calls)
    for i, (head, arguments) in enumerate(zip(parts[::2], parts[1::2], strict=True)):
        assert head["index"] == i and head["type"] == "function" and head["id"].startswith("call_")
        assert head["function"]["arguments"] == ""
        assert arguments == {
            "index": i,
            "function": {"arguments": arguments["function"]["arguments"]},
        }
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    usage = plain.usage
    assert chunks[-1]["usage"] == {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }

    # the SDK's own accumulator puts them together into the same calls as the plain answer
    with sdk.chat.completions.stream(**body, max_tokens=60) as sdk_stream:
        final = sdk_stream.get_final_completion()
    calls = [(c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls]
    assert calls == [
        (c.function.name, c.function.arguments) for c in plain.choices[0].message.tool_calls
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert {r.adapter for r in tiny.requests} == {"ft"}  # finetuned: the adapter answered


@real_model
def test_without_parallel_tool_calls_one_call_comes_back(sdk, tiny):
    completion = sdk.chat.completions.create(
        model="base",
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
    )
    (call,) = completion.choices[0].message.tool_calls
    check_call(call)
    assert tiny.requests[-1].parallel_tool_calls is False


@real_model
def test_tool_choice_none_answers_in_text_without_the_tool_listing(sdk, tiny):
    completion = sdk.chat.completions.create(
        model="base", messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=12
    )
    (answer,) = completion.choices
    assert answer.message.tool_calls is None and isinstance(answer.message.content, str)
    assert answer.finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens == prompt_tokens(tiny, messages=ASK)


@real_model
def test_auto_answers_either_in_text_or_with_calls_that_parse(sdk):
    shapes = set()
    for seed in range(4):
        completion = sdk.chat.completions.create(
            model="base", messages=ASK, tools=TOOLS, temperature=1.5, seed=seed, max_tokens=40
        )
        (answer,) = completion.choices
        if answer.message.tool_calls:
            assert answer.finish_reason == "tool_calls" and answer.message.content is None
            for call in answer.message.tool_calls:
                check_call(call)
            shapes.add("calls")
        else:
            assert answer.finish_reason in ("stop", "length")
            assert answer.message.content and answer.message.content[0] not in "< "
            shapes.add("text")
    assert shapes  # which one the random model picks is noise; each is well formed


@real_model
def test_a_tool_result_is_accepted_on_the_next_turn(sdk, tiny, tokenizer):
    first = sdk.chat.completions.create(
        model="base",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "lookup_torque"}},
        max_tokens=60,
    )
    called = first.choices[0].message
    messages = [
        *ASK,
        called.model_dump(exclude_none=True),
        *(
            {"role": "tool", "tool_call_id": call.id, "content": "24 Nm"}
            for call in called.tool_calls
        ),
    ]
    second = sdk.chat.completions.create(
        model="base", messages=messages, tools=TOOLS, tool_choice="none", max_tokens=12
    )
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].finish_reason in ("stop", "length")
    # the model saw its call and the result, written as text for SmolLM2's template
    request = tiny.requests[-1]
    assert request.messages[1]["tool_calls"][0]["id"] == called.tool_calls[0].id
    assert request.messages[2] == {
        "role": "tool",
        "tool_call_id": called.tool_calls[0].id,
        "content": "24 Nm",
    }
    rendered, _ = render_messages(request, supports_tools(tokenizer.chat_template))
    prompt = tokenizer.apply_chat_template(rendered, tokenize=False, add_generation_prompt=True)
    assert "<tool_response>\n24 Nm\n</tool_response>" in prompt
    assert '<tool_call>{"name": "lookup_torque"' in prompt
    assert second.usage.prompt_tokens == tiny.count_tokens(request)


@real_model
def test_response_format_json_schema_answers_parse_into_the_schema(sdk, tiny):
    completion = sdk.chat.completions.parse(
        model="finetuned",
        messages=[{"role": "user", "content": "Rate the damage: a dented hood."}],
        response_format=Verdict,
        max_tokens=48,
    )
    (answer,) = completion.choices
    assert answer.finish_reason == "stop"
    assert isinstance(answer.message.parsed, Verdict)  # pydantic checked enum and bounds
    assert json.loads(answer.message.content) == answer.message.parsed.model_dump()
    assert tiny.requests[-1].response_schema["properties"]["cost"]["maximum"] == 9999


@real_model
def test_chatopenai_structured_output_parses_into_the_schema(live, tiny):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model="base", base_url=f"{live}/v1", api_key="unused", max_retries=0, max_tokens=48
    )
    verdict = llm.with_structured_output(Verdict).invoke("Rate the damage: a dented hood.")
    assert isinstance(verdict, Verdict)
    assert tiny.requests[-1].response_schema["required"] == ["severity", "cost"]


@real_model
def test_response_format_json_object_answers_one_json_object(sdk):
    completion = sdk.chat.completions.create(
        model="base",
        messages=[{"role": "user", "content": "Describe the hood as JSON."}],
        response_format={"type": "json_object"},
        max_tokens=48,
    )
    assert isinstance(json.loads(completion.choices[0].message.content), dict)


@real_model
def test_a_react_agent_on_the_tiny_model_calls_the_python_tool_and_finishes(live):
    """Real constrained output through LangChain: the agent's policy (a client's choice) is
    to require a call first and answer once it has a result."""
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    looked_up = []

    @tool
    def torque_spec(part: Literal["hood", "door"]) -> str:
        """The hinge bolt torque of a part."""
        looked_up.append(part)
        return {"hood": "24 Nm", "door": "9 Nm"}[part]

    llm = ChatOpenAI(
        model="base", base_url=f"{live}/v1", api_key="unused", max_retries=0, max_tokens=40
    )
    first, then = (
        llm.bind_tools([torque_spec], tool_choice="required"),
        llm.bind_tools([torque_spec], tool_choice="none"),
    )

    def agent(state: MessagesState) -> dict:
        answered = any(isinstance(m, ToolMessage) for m in state["messages"])
        return {"messages": [(then if answered else first).invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([torque_spec]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    graph = builder.compile()

    final = graph.invoke({"messages": [HumanMessage("Hood hinge torque?")]})
    _, called, *results, answer = final["messages"]
    assert called.tool_calls and {c["name"] for c in called.tool_calls} == {"torque_spec"}
    assert [r.content for r in results] == [{"hood": "24 Nm", "door": "9 Nm"}[p] for p in looked_up]
    assert [r.tool_call_id for r in results] == [c["id"] for c in called.tool_calls]
    assert not answer.tool_calls and answer.usage_metadata["input_tokens"] > 0


# ---- a LangGraph ReAct agent on a scripted model: the exact round trip ----------------------


@pytest.fixture
def scripted(make_app, context):
    backend = ScriptedBackend([[("multiply", {"a": 6, "b": 7})], "6 times 7 is 42."])
    context.llm = LocalChatModel(backend=backend)
    with serving(make_app()) as url:
        yield url, backend


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "streamed"])
def test_a_langgraph_react_agent_on_chatopenai_runs_a_python_tool_and_finishes(scripted, streaming):
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    url, backend = scripted
    ran = []

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two whole numbers."""
        ran.append((a, b))
        return a * b

    llm = ChatOpenAI(
        model="base",
        base_url=f"{url}/v1",
        api_key="unused",
        max_retries=0,
        streaming=streaming,
        stream_usage=True,
    ).bind_tools([multiply])

    def agent(state: MessagesState) -> dict:
        return {"messages": [llm.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([multiply]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    final = builder.compile().invoke({"messages": [HumanMessage("What is 6 times 7?")]})

    _, called, result, answer = final["messages"]
    assert isinstance(called, AIMessage) and isinstance(result, ToolMessage)
    ((call),) = called.tool_calls
    assert (call["name"], call["args"]) == ("multiply", {"a": 6, "b": 7})
    assert ran == [(6, 7)] and result.content == "42" and result.tool_call_id == call["id"]
    assert answer.content == "6 times 7 is 42." and not answer.tool_calls
    assert called.usage_metadata["input_tokens"] == 10
    assert called.usage_metadata["output_tokens"] == 5
    assert called.response_metadata["finish_reason"] == "tool_calls"

    first, second = backend.requests
    assert [t["function"]["name"] for t in first.tools] == ["multiply"]
    assert first.tools[0]["function"]["parameters"]["required"] == ["a", "b"]
    assert first.tool_choice == "auto"
    assert second.messages[1]["tool_calls"][0]["id"] == call["id"]
    assert second.messages[2] == {"role": "tool", "tool_call_id": call["id"], "content": "42"}


# ---- what is refused, with the field named --------------------------------------------------


def test_model_agent_refuses_client_tools_with_a_clear_message(scripted):
    url, backend = scripted
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="agent", messages=ASK, tools=TOOLS)
    assert (caught.value.param, caught.value.code) == ("tools", "unsupported_parameter")
    assert "model=agent runs tunegraph's own manual tools" in str(caught.value)
    assert "model=base or model=finetuned" in str(caught.value)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model="rag", messages=ASK, response_format={"type": "json_object"}
        )
    assert caught.value.param == "response_format"
    assert backend.requests == []


CALLED = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup_torque", "arguments": '{"part": "hood", "bolts": 2}'},
        }
    ],
}


def _tool(parameters, name="lookup"):
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


BAD = [
    # an invalid tools schema
    ({"tools": [_tool({"type": "object", "properties": {"a": {"type": "strin"}}})]},
     "tools[0].function.parameters", "invalid_schema", "Invalid type: strin"),
    ({"tools": [TORQUE, _tool({"type": "object", "properties": 5})]},
     "tools[1].function.parameters", "invalid_schema", "properties must be an object"),
    ({"tools": [_tool({"type": "array"})]}, "tools[0].function.parameters", "invalid_value",
     '"type": "object"'),
    ({"tools": [_tool({"type": "object"}, name="bad name!")]}, "tools[0].function.name",
     "invalid_value", "1 to 64 letters"),
    ({"tools": [TORQUE, TORQUE]}, "tools[1].function.name", "invalid_value", "names must differ"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]", "invalid_value",
     '"type": "function"'),
    ({"tools": {"lookup": {}}}, "tools", "invalid_value", "a list"),
    # a tool_choice naming an unknown function, or none at all
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "weather"}}},
     "tool_choice", "invalid_value", "(lookup_torque, lookup_fault_code)"),
    ({"tool_choice": {"type": "function", "function": {"name": "weather"}}}, "tool_choice",
     "invalid_value", "none sent"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice", "invalid_value", '"required"'),
    ({"tool_choice": "required"}, "tool_choice", "invalid_value", "send tools"),
    # response_format with a schema feature the grammar cannot follow, or malformed
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "array", "items": {"type": "string"}, "uniqueItems": True}}}},
     "response_format.json_schema.schema", "invalid_schema", 'Unimplemented keys: ["uniqueItems"]'),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "string", "pattern": "(?<=a)b"}}}},
     "response_format.json_schema.schema", "invalid_schema", "look-around"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema", "invalid_value", "a JSON schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "integer", "minimum": 5, "maximum": 1}}}},
     "response_format.json_schema.schema", "invalid_schema", "Unsatisfiable schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "x-guidance": {"lenient": True}}}}},
     "response_format.json_schema.schema", "invalid_value", "x-guidance"),
    ({"response_format": {"type": "xml"}}, "response_format", "invalid_value", "json_object"),
    ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format",
     "invalid_value", "tool_choice none"),
    ({"parallel_tool_calls": "yes", "tools": TOOLS}, "parallel_tool_calls", "invalid_value",
     "true or false"),
    ({"functions": [{"name": "f"}]}, "functions", "unsupported_parameter", "send tools"),
    # tool calls and results in the conversation
    ({"messages": [*ASK, CALLED, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]},
     "messages[2].tool_call_id", "invalid_value", "(call_1)"),
    ({"messages": [*ASK, {"role": "tool", "tool_call_id": ["call_1"], "content": "x"}]},
     "messages[1].tool_call_id", "invalid_value", "(there are none)"),
    ({"messages": [*ASK, {**CALLED, "tool_calls": [{**CALLED["tool_calls"][0], "function": {
        "name": "lookup_torque", "arguments": "{part: hood"}}]}]},
     "messages[1].tool_calls[0].function.arguments", "invalid_value", "JSON object"),
    ({"model": "finetuned-rag", "messages": [*ASK, CALLED]}, "messages[1]", "invalid_value",
     "model=finetuned-rag answers from the manual passages"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "param", "code", "says"), BAD)
def test_bad_tools_tool_choice_and_response_format_are_400s_naming_the_field(
    client, context, change, param, code, says
):
    response = client.post(
        "/v1/chat/completions", json={"model": "base", "messages": ASK, **change}
    )
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    assert says in error["message"]
    assert context.llm.backend.requests == []  # refused before the model
