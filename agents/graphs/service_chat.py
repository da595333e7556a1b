"""Service chat over the manuals in five modes, on the same questions:

- ``base``: the base model alone; ``rag``: the base model with retrieved manual blocks;
- ``finetuned`` / ``finetuned-rag``: the same with the fine-tuned adapter;
- ``agent``: a router sends the question to a tool (manual search, spec lookup, fault-code
  lookup) and the model answers from what the tool found. With ``router="model"`` the model
  itself picks tools and arguments (after ``max_tool_rounds`` rounds it must answer; an
  adapter trained for tool use may also answer at once, any other model must call a tool
  first); with ``router="rules"`` the question's kind and any fault code pick the tool. The
  default, ``"auto"``, is the model when its adapter was trained for tool use
  (:meth:`AgentContext.agent_router`), else the rules: SmolLM2-135M's own tool arguments are
  mostly noise.

A tool error — an unknown tool, arguments the tool refuses — goes back to the model as a tool
message (status ``error``) that names the fix, never a crash; the model may call again.

Abstention: when retrieval (``rag``, ``finetuned-rag``) or the rule router's tool finds nothing
that bears on the question — a fault-code lookup with no entry, or passages whose best match
scores below ``AgentContext.min_support`` (:meth:`rag.retrieval.Retriever.support`) — the
answer is the refusal sentence of :func:`finetune.datasets.refusal` without asking the model;
the agent's refusal also says what it looked up. The fine-tuned adapter learns the same
sentence for what its manual lacks. :func:`rag_retrieval` hands an evaluation the same search
and gate.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agents.context import AgentContext
from agents.errors import AgentError
from agents.prompts import AGENT_PROMPT, manual_question, task_prefix
from agents.state import ChatState
from agents.timing import timed
from agents.tools import manual_tools, search_manual
from finetune.datasets import refusal
from rag.retrieval import identifiers

NAME = "service_chat"
MODES = ("base", "rag", "finetuned", "finetuned-rag", "agent")
RECURSION_LIMIT = 24
FAULT_CODE = re.compile(r"[PBCU]\d{4}")
_PREFIX = re.compile(r"^\s*\[[A-Z]+\]\s*")
_ID = re.compile(r"^\[([^\]]+)\] ")  # a tool result names each block: "[id] text"


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


def _asked(question: str) -> str:
    """What a refusal names: the question as the user asked it, without the task prefix."""
    return f"“{_PREFIX.sub('', question).strip()}”"


def supported(context: AgentContext, question: str, texts: list[str]) -> bool:
    """Whether what a search found bears on ``question`` (always, without a threshold or with a
    retriever that cannot say)."""
    support = getattr(context.manuals, "support", None)
    if context.min_support is None or support is None:
        return True
    return support(_PREFIX.sub("", question).strip(), texts) >= context.min_support


def passages(context: AgentContext, question: str) -> list[dict]:
    """The manual blocks that the ``rag`` modes put before ``question``, best first (before
    :func:`supported` judges them)."""
    return search_manual(context.manuals, question, context.manual_k)


def rag_retrieval(
    retriever: Any, min_support: float | None
) -> tuple[Callable[[str], list[str]], Callable[[str, list[str]], bool] | None]:
    """The ``rag`` modes' search (the texts of :func:`passages`) and gate (:func:`supported`;
    None without a threshold) over ``retriever``, as plain functions: what an evaluation of
    those modes answers with, so that it refuses what chat refuses."""
    context = AgentContext(manuals=retriever, min_support=min_support)

    def search(question: str) -> list[str]:
        return [hit["text"] for hit in passages(context, question)]

    gate = None if min_support is None else functools.partial(supported, context)
    return search, gate


@timed("retrieve")
def retrieve(state: ChatState, runtime: Runtime[AgentContext]) -> dict:
    context = runtime.context
    context.require(NAME, "manuals")
    question = _question(state)
    hits = passages(context, question)
    if not supported(context, question, [h["text"] for h in hits]):
        return {"context": [], "unsupported": True}
    return {"context": hits, "unsupported": False}


@timed("answer")
def answer(state: ChatState, runtime: Runtime[AgentContext]) -> dict:
    context = runtime.context
    if state.get("unsupported"):
        return {"messages": [AIMessage(refusal(_asked(_question(state))))]}
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
    label = {"chat": getattr(llm, "model_label", "chat")}
    rounds = state.get("tool_rounds", 0)
    if context.agent_router() == "rules":
        if rounds == 0:
            return {"messages": [AIMessage("", tool_calls=[route_by_rules(_question(state))])]}
        tools = [m for m in _this_turn(state) if isinstance(m, ToolMessage)]
        found = [m.text for m in tools if not _empty(m.text)]
        question = _question(state)
        passages = [_ID.sub("", p) for text in found for p in text.split("\n---\n")]
        if not found or not supported(context, question, passages):
            return {"messages": [AIMessage(_looked_up(refusal(_asked(question)), state))]}
        return {"messages": [llm.invoke(manual_question(question, found))], "models": label}
    # An untrained model's first turn must consult a tool (a small model otherwise answers
    # from memory); one trained for tools also learned when none is needed. Then the model may
    # look further or answer, until the last round, which must answer.
    trained = context.tool_adapter and context.finetuned_adapter is not None
    choice = "required" if rounds == 0 and not trained else "auto"
    if rounds >= context.max_tool_rounds:
        choice = "none"
    bound = llm.bind_tools(manual_tools(context.manuals, context.manual_k), tool_choice=choice)
    reply = bound.invoke([SystemMessage(AGENT_PROMPT), *state["messages"]])
    return {"messages": [reply], "models": label}


def _this_turn(state: ChatState) -> list:
    """The messages after the user's last one (a thread keeps earlier turns)."""
    messages = state.get("messages", [])
    last = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
    return messages[last + 1 :]


def _empty(result: str) -> bool:
    """A tool result that found nothing (see :mod:`agents.tools`)."""
    return result.startswith(("Nothing found", "No troubleshooting entry", "Error:"))


def _looked_up(text: str, state: ChatState) -> str:
    """``text`` followed by the lookups the agent made, so that a refusal says where it looked."""
    calls = [
        f"{call['name']}({', '.join(f'{k}={v!r}' for k, v in call['args'].items())})"
        for message in _this_turn(state)
        if isinstance(message, AIMessage)
        for call in message.tool_calls
    ]
    return f"{text} Looked up: {'; '.join(calls)}." if calls else text


def tool_calls(state: ChatState) -> list[dict[str, Any]]:
    """The tools the agent called this turn, in order: each one's name, arguments, whether it
    ran (``status``), the manual passages it found (id and text) and, when it found none, what
    it answered instead.

    >>> call = {"name": "search_manual", "args": {"query": "torque"}, "id": "c1"}
    >>> found = ToolMessage("[b-1] Bolt 24 Nm.\\n---\\n[b-2] Nut 9 Nm.", tool_call_id="c1")
    >>> messages = [HumanMessage("torque?"), AIMessage("", tool_calls=[call]), found]
    >>> [p["id"] for p in tool_calls({"messages": messages})[0]["passages"]]
    ['b-1', 'b-2']
    """
    turn = _this_turn(state)
    results = {m.tool_call_id: m for m in turn if isinstance(m, ToolMessage)}
    calls = []
    for message in turn:
        if not isinstance(message, AIMessage):
            continue
        for call in message.tool_calls:
            result = results.get(call["id"])
            text = result.text if result is not None else ""
            passages = []
            if result is not None and not _empty(text):
                for block in text.split("\n---\n"):
                    named = _ID.match(block)
                    passages.append(
                        {"id": named.group(1) if named else "", "text": _ID.sub("", block)}
                    )
            calls.append(
                {
                    "name": call["name"],
                    "arguments": call["args"],
                    "status": result.status if result is not None else "not_run",
                    "passages": passages,
                    "message": None if passages else text,
                }
            )
    return calls


def route_by_rules(question: str) -> dict:
    """The tool call a rule router makes: a fault code goes to the fault-code lookup, a
    specification question to the spec lookup, anything else to manual search.

    >>> route_by_rules("What does P0117 mean?")["args"]
    {'code': 'P0117'}
    """
    codes = [c for c in identifiers(question) if FAULT_CODE.fullmatch(c)]
    if codes:
        name, args = "lookup_fault_code", {"code": codes[0]}
    elif task_prefix(question) == "SPEC":
        name, args = "lookup_spec", {"query": question}
    else:
        name, args = "search_manual", {"query": question}
    return {"name": name, "args": args, "id": f"route_{name}", "type": "tool_call"}


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
