from __future__ import annotations

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage

from agents.context import AgentContext, MissingDependencyError
from agents.errors import AgentError
from agents.graphs import service_chat
from finetune.datasets import is_refusal
from rag.stores.base import Hit
from tests.agents.fakes import FakeRetriever, fake_llm

BLOCKS = [
    Hit("spec-1", "Wheel nut torque: 110 Nm.", 0.9, {"kind": "SPEC"}),
    Hit("ts-1", "P0117: coolant temperature sensor circuit low.", 0.8, {"kind": "TROUBLESHOOTING"}),
]
QUESTION = "What is the wheel nut torque of the Vireo?"


def chat(mode, *replies, manuals=None, **context):
    ctx = AgentContext(
        llm=fake_llm(*replies), finetuned_adapter="ft", manuals=manuals or FakeRetriever(BLOCKS),
        **context,
    )  # fmt: skip
    state = service_chat.graph.invoke(
        {"messages": [HumanMessage(QUESTION)], "mode": mode}, context=ctx
    )
    return state, ctx


@pytest.mark.parametrize(
    ("mode", "adapter", "retrieves"),
    [
        ("base", None, False),
        ("rag", None, True),
        ("finetuned", "ft", False),
        ("finetuned-rag", "ft", True),
    ],
)
def test_the_four_direct_modes(mode, adapter, retrieves):
    state, ctx = chat(mode, "110 Nm")
    assert state["messages"][-1].content == "110 Nm"
    request = ctx.llm.backend.requests[0]
    assert request.adapter == adapter and not request.tools
    user = request.messages[-1]["content"]
    assert user.endswith(f"[SPEC] {QUESTION}")
    assert ("Wheel nut torque: 110 Nm." in user) == retrieves
    assert set(state["timings"]) == ({"retrieve", "answer"} if retrieves else {"answer"})
    assert state["models"]["chat"] == ("fake-llm+ft" if adapter else "fake-llm")


def test_the_agent_calls_a_tool_then_answers_from_it():
    manuals = FakeRetriever(BLOCKS)
    state, ctx = chat(
        "agent",
        [("lookup_spec", {"query": "wheel nut torque"})],
        "It is 110 Nm.",
        manuals=manuals,
        router="model",
    )
    first, second = ctx.llm.backend.requests
    assert {t["function"]["name"] for t in first.tools} == {
        "search_manual",
        "lookup_spec",
        "lookup_fault_code",
    }
    assert manuals.queries == [("wheel nut torque", 3, {"kind": "SPEC"})]
    tool_message = state["messages"][2]
    assert (
        isinstance(tool_message, ToolMessage)
        and "[spec-1] Wheel nut torque" in tool_message.content
    )
    assert second.messages[-1]["role"] == "tool"
    assert state["messages"][-1].content == "It is 110 Nm."
    assert state["tool_rounds"] == 1


def test_a_tool_error_goes_back_to_the_model():
    broken = FakeRetriever([], error=RuntimeError("index offline"))
    state, _ = chat(
        "agent",
        [("search_manual", {"query": "x"}), ("nope", {})],
        "Sorry.",
        manuals=broken,
        router="model",
    )
    errors = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert [m.status for m in errors] == ["error", "error"]
    assert "index offline" in errors[0].content and "no tool named 'nope'" in errors[1].content
    assert state["messages"][-1].content == "Sorry."


def test_after_max_rounds_the_agent_must_answer():
    call = [("lookup_fault_code", {"code": "P0117"})]
    state, ctx = chat(
        "agent", call, call, "P0117 means sensor circuit low.", max_tool_rounds=2, router="model"
    )
    assert [r.tool_choice for r in ctx.llm.backend.requests] == ["required", "auto", "none"]
    assert "P0117: coolant" in state["messages"][2].content
    assert state["messages"][-1].content.startswith("P0117 means")


@pytest.mark.parametrize(
    ("question", "tool", "args"),
    [
        ("My scan tool shows P0117, what now?", "lookup_fault_code", {"code": "P0117"}),
        (QUESTION, "lookup_spec", {"query": QUESTION}),
        ("How do I bleed the brakes?", "search_manual", {"query": "How do I bleed the brakes?"}),
    ],
)
def test_the_rule_router_picks_the_tool_and_the_model_answers_from_it(question, tool, args):
    ctx = AgentContext(
        llm=fake_llm("Answer."), finetuned_adapter="ft", manuals=FakeRetriever(BLOCKS)
    )
    state = service_chat.graph.invoke(
        {"messages": [HumanMessage(question)], "mode": "agent"}, context=ctx
    )
    call = state["messages"][1].tool_calls[0]
    assert (call["name"], call["args"]) == (tool, args)
    (request,) = ctx.llm.backend.requests  # the router itself asks no model
    assert request.adapter == "ft" and not request.tools
    assert request.messages[-1]["content"].startswith("Manual excerpts:\n[")
    assert state["messages"][-1].content == "Answer."


@pytest.mark.parametrize("mode", ["rag", "finetuned-rag"])
def test_retrieval_that_does_not_bear_on_the_question_gets_the_refusal(mode):
    unrelated = FakeRetriever(BLOCKS, support_score=0.2)
    state, ctx = chat(mode, "140 Nm", manuals=unrelated, min_support=0.5)
    answer = state["messages"][-1].content
    assert answer == f"The manual does not cover “{QUESTION}”."
    assert is_refusal(answer) and ctx.llm.backend.requests == []  # no model asked
    assert unrelated.supports == [(QUESTION, [b.text for b in BLOCKS])]
    # above the threshold, or without one, the model answers from the passages
    for manuals, threshold in ((FakeRetriever(BLOCKS, support_score=0.6), 0.5), (unrelated, None)):
        state, _ = chat(mode, "110 Nm", manuals=manuals, min_support=threshold)
        assert state["messages"][-1].content == "110 Nm"


def test_the_agent_refuses_when_its_lookup_finds_nothing_and_says_where_it_looked():
    ctx = AgentContext(llm=fake_llm("P0999 is a misfire."), manuals=FakeRetriever(BLOCKS))
    ctx.finetuned_adapter = "ft"
    state = service_chat.graph.invoke(
        {"messages": [HumanMessage("[TROUBLESHOOTING] What does P0999 mean?")], "mode": "agent"},
        context=ctx,
    )
    answer = state["messages"][-1].content
    assert answer == (
        "The manual does not cover “What does P0999 mean?”. "
        "Looked up: lookup_fault_code(code='P0999')."
    )
    assert ctx.llm.backend.requests == []
    # a spec lookup whose rows do not bear on the question: the same, with min_support
    ctx = AgentContext(
        llm=fake_llm("33 Nm"),
        finetuned_adapter="ft",
        manuals=FakeRetriever(BLOCKS, support_score=0.1),
        min_support=0.5,
    )
    question = "What is the sunroof motor torque?"
    state = service_chat.graph.invoke(
        {"messages": [HumanMessage(question)], "mode": "agent"}, context=ctx
    )
    assert (
        is_refusal(state["messages"][-1].content) and "lookup_spec" in state["messages"][-1].content
    )
    assert ctx.manuals.supports[0][1] == ["Wheel nut torque: 110 Nm."]  # "[id] " taken off


def test_answers_stream_token_by_token():
    ctx = AgentContext(llm=fake_llm("It is 110 Nm."), manuals=FakeRetriever(BLOCKS))
    tokens = [
        chunk.content
        for chunk, meta in service_chat.graph.stream(
            {"messages": [HumanMessage(QUESTION)], "mode": "rag"},
            context=ctx,
            stream_mode="messages",
        )
        if isinstance(chunk, AIMessageChunk) and meta["langgraph_node"] == "answer"
    ]
    assert [t for t in tokens if t] == ["It", " is", " 110", " Nm."]


def test_bad_modes_and_missing_pieces_are_clear_errors():
    with pytest.raises(AgentError, match="unknown chat mode 'fast'; use one of base, rag"):
        chat("fast", "x")
    ctx = AgentContext(llm=fake_llm("x"))
    with pytest.raises(MissingDependencyError, match="needs manuals"):
        service_chat.graph.invoke({"messages": [HumanMessage("q")], "mode": "rag"}, context=ctx)
    with pytest.raises(MissingDependencyError, match="no fine-tuned adapter"):
        service_chat.graph.invoke(
            {"messages": [HumanMessage("q")], "mode": "finetuned"}, context=ctx
        )


def test_a_refusal_does_not_carry_over_to_the_next_turn_of_a_thread():
    from langgraph.checkpoint.memory import InMemorySaver

    graph = service_chat.build(InMemorySaver())
    manuals = FakeRetriever(BLOCKS, support_score=0.1)
    ctx = AgentContext(llm=fake_llm("110 Nm"), manuals=manuals, min_support=0.5)
    thread = {"configurable": {"thread_id": "t1"}}
    first = graph.invoke(
        {"messages": [HumanMessage("Sunroof torque?")], "mode": "rag"}, thread, context=ctx
    )
    assert is_refusal(first["messages"][-1].content)
    manuals.support_score = 0.9
    second = graph.invoke(
        {"messages": [HumanMessage(QUESTION)], "mode": "rag"}, thread, context=ctx
    )
    assert second["messages"][-1].content == "110 Nm"


def test_a_wrong_tool_and_bad_arguments_become_tool_errors_the_agent_recovers_from():
    manuals = FakeRetriever(BLOCKS)
    state, ctx = chat(
        "agent",
        [("lookup_torque", {"query": "wheel nut"})],  # no such tool
        [("lookup_fault_code", {"query": "P0117"})],  # the lookup takes a code
        [("lookup_spec", {"query": "wheel nut torque"})],
        "It is 110 Nm.",
        manuals=manuals,
        router="model",
        max_tool_rounds=4,
    )
    results = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert [m.status for m in results] == ["error", "error", "success"]
    assert "no tool named 'lookup_torque'" in results[0].content
    assert "code" in results[1].content and "Fix the arguments" in results[1].content
    assert "[spec-1] Wheel nut torque: 110 Nm." in results[2].content
    assert state["messages"][-1].content == "It is 110 Nm."
    assert state["tool_rounds"] == 3
    # the model saw each error before it called again
    assert "no tool named" in ctx.llm.backend.requests[1].messages[-1]["content"]
    assert manuals.queries == [("wheel nut torque", 3, {"kind": "SPEC"})]


@pytest.mark.parametrize(
    ("router", "tool_adapter", "adapter", "runs"),
    [
        ("auto", False, "ft", "rules"),
        ("auto", True, "ft", "model"),
        ("auto", True, None, "rules"),  # the base model alone is not trained for tools
        ("rules", True, "ft", "rules"),
        ("model", False, "ft", "model"),
    ],
)
def test_the_model_routes_by_default_when_its_adapter_was_trained_for_tools(
    router, tool_adapter, adapter, runs
):
    call = [("lookup_spec", {"query": "torque"})]
    ctx = AgentContext(
        llm=fake_llm(*([call] if runs == "model" else []), "110 Nm"),
        finetuned_adapter=adapter,
        manuals=FakeRetriever(BLOCKS),
        router=router,
        tool_adapter=tool_adapter,
    )
    state = service_chat.graph.invoke(
        {"messages": [HumanMessage(QUESTION)], "mode": "agent"}, context=ctx
    )
    assert ctx.agent_router() == runs
    first = ctx.llm.backend.requests[0]
    # the rule router asks the model only for the answer; the model router offers it the tools
    assert bool(first.tools) == (runs == "model")
    assert state["messages"][-1].content == "110 Nm"
    assert len(ctx.llm.backend.requests) == (2 if runs == "model" else 1)


def test_a_tool_trained_adapter_may_answer_without_a_tool():
    ctx = AgentContext(
        llm=fake_llm("Hello! Ask me about the manual."),
        finetuned_adapter="ft",
        manuals=FakeRetriever(BLOCKS),
        tool_adapter=True,
    )
    state = service_chat.graph.invoke(
        {"messages": [HumanMessage("Hi there!")], "mode": "agent"}, context=ctx
    )
    (request,) = ctx.llm.backend.requests
    assert request.tool_choice == "auto" and request.adapter == "ft"
    assert state["messages"][-1].content == "Hello! Ask me about the manual."
    assert service_chat.tool_calls(state) == []
