"""Service chat over the manuals in five modes, on the same questions:

- ``base``: the base model alone; ``rag``: the base model with retrieved manual blocks;
- ``finetuned`` / ``finetuned-rag``: the same with the fine-tuned adapter;
- ``agent``: the model decides which tool to call (manual search, spec lookup, fault-code lookup)
  and answers from the results; after ``max_tool_rounds`` rounds it must answer.

A tool error goes back to the model as a tool message (status ``error``), never a crash.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agents.context import AgentContext
from agents.errors import AgentError
from agents.prompts import AGENT_PROMPT, manual_question
from agents.state import ChatState
from agents.timing import timed
from agents.tools import manual_tools, search_manual

NAME = "service_chat"
MODES = ("base", "rag", "finetuned", "finetuned-rag", "agent")
RECURSION_LIMIT = 24


def _question(state: ChatState) -> str:
    for message in reversed(state.get("messages", [])):
        if isinstance(message, HumanMessage):
            return message.text
    raise AgentError("service chat needs a user message")


def route(state: ChatState) -> str:
    mode = state.get("mode", "finetuned-rag")
    if mode not in MODES:
        raise AgentError(f"unknown chat mode {mode!r}; use one of {', '.join(MODES)}")
    if mode == "agent":
        return "agent"
    return "retrieve" if mode.endswith("rag") else "answer"


@timed("retrieve")
def retrieve(state: ChatState, runtime: Runtime[AgentContext]) -> dict:
    context = runtime.context
    context.require(NAME, "manuals")
    return {"context": search_manual(context.manuals, _question(state), context.manual_k)}


@timed("answer")
def answer(state: ChatState, runtime: Runtime[AgentContext]) -> dict:
    context = runtime.context
    context.require(NAME, "llm")
    llm = context.chat_model(finetuned=state.get("mode", "").startswith("finetuned"))
    blocks = [h["text"] for h in state.get("context", [])]
    reply = llm.invoke(manual_question(_question(state), blocks))
    return {"messages": [reply], "models": {"chat": getattr(llm, "model_label", "chat")}}


@timed("agent")
def agent(state: ChatState, runtime: Runtime[AgentContext]) -> dict:
    context = runtime.context
    context.require(NAME, "llm", "manuals")
    llm = context.chat_model(finetuned=context.finetuned_adapter is not None)
    rounds = state.get("tool_rounds", 0)
    choice = "none" if rounds >= context.max_tool_rounds else "auto"
    bound = llm.bind_tools(manual_tools(context.manuals, context.manual_k), tool_choice=choice)
    reply = bound.invoke([SystemMessage(AGENT_PROMPT), *state["messages"]])
    return {"messages": [reply], "models": {"chat": getattr(llm, "model_label", "chat")}}


@timed("tools")
def run_tools(state: ChatState, runtime: Runtime[AgentContext]) -> dict:
    context = runtime.context
    available = {t.name: t for t in manual_tools(context.manuals, context.manual_k)}
    results = []
    for call in state["messages"][-1].tool_calls:
        tool = available.get(call["name"])
        try:
            if tool is None:
                raise ValueError(
                    f"no tool named {call['name']!r}; use one of {', '.join(available)}"
                )
            content, status = str(tool.invoke(call["args"])), "success"
        except Exception as exc:
            content = f"Error: {exc}. Fix the arguments or use another tool."
            status = "error"
        results.append(
            ToolMessage(content, tool_call_id=call["id"], name=call["name"], status=status)
        )
    return {"messages": results, "tool_rounds": state.get("tool_rounds", 0) + 1}


def after_agent(state: ChatState) -> str:
    last = state["messages"][-1]
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else END


def build(checkpointer: Any = None) -> Any:
    builder = StateGraph(ChatState, context_schema=AgentContext)
    builder.add_node("retrieve", retrieve)
    builder.add_node("answer", answer)
    builder.add_node("agent", agent)
    builder.add_node("tools", run_tools)
    builder.add_conditional_edges(START, route, ["retrieve", "answer", "agent"])
    builder.add_edge("retrieve", "answer")
    builder.add_edge("answer", END)
    builder.add_conditional_edges("agent", after_agent, ["tools", END])
    builder.add_edge("tools", "agent")
    compiled = builder.compile(checkpointer=checkpointer, name=NAME)
    return compiled.with_config(recursion_limit=RECURSION_LIMIT)


graph = build()
