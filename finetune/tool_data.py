"""Tool-use examples for the service-chat agent (``router="model"``): for each training question,
the right first step — a call of ``search_manual``, ``lookup_spec`` or ``lookup_fault_code``, or
no tool — the call, the tool's real result, and the final answer grounded in it.

The conversation is written as the serving path writes it for a chat template that does not
know tools (SmolLM2's; ``agents/backends/chat_format.py``): the tool list in the system prompt,
earlier calls as ``<tool_call>{...}</tool_call>`` text, tool results as a user turn in
``<tool_response>`` tags. ``finetune`` does not import ``agents``, so the strings are repeated
here; ``tests/agents/test_tool_eval.py`` checks that both render the same prompt.

A question whose first lookup misses its block (the result names no ``[block id]``) becomes a
multi-step case: the lookup, then a manual search. Each assistant turn is one
:class:`~finetune.datasets.SFTExample` (only the last turn of an example carries labels).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.datasets import SYSTEM_PROMPT, DatasetError, SFTExample
from ingest.records import ManualBlock, QAPair

# The same words as agents.prompts.AGENT_PROMPT (what the agent's system message says).
AGENT_PROMPT = (
    SYSTEM_PROMPT
    + " Use the tools to find the manual's exact words before answering; answer briefly and "
    "give values with their units."
)
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
MAX_ARGUMENT_CHARS = 100  # as agents.backends.chat_format: the grammar's cap on a free string
NO_TOOL = "none"
# The manual tools as serving offers them (convert_to_openai_tool of agents.tools.manual_tools).
TOOL_FUNCTIONS: tuple[dict[str, Any], ...] = (
    {
        "name": "search_manual",
        "description": "Search the vehicle service manuals (procedures, explanations, wiring, "
        "specs).",
        "parameters": {
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
            "type": "object",
        },
    },
    {
        "name": "lookup_spec",
        "description": "Look up a specification value (torque, capacity, gap, pressure...) in "
        "the manuals.",
        "parameters": {
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
            "type": "object",
        },
    },
    {
        "name": "lookup_fault_code",
        "description": "Look up a diagnostic trouble code such as P0117: meaning, causes and "
        "checks.",
        "parameters": {
            "properties": {"code": {"type": "string"}},
            "required": ["code"],
            "type": "object",
        },
    },
)
TOOL_NAMES = tuple(f["name"] for f in TOOL_FUNCTIONS)
CHOICES = (*TOOL_NAMES, NO_TOOL)  # what a first step can be
_PREFIX = re.compile(r"^\s*\[[A-Z]+\]\s*")
_DTC = re.compile(r"\b[PCBU][0-3][0-9A-F]{3}\b")

# (name, arguments) -> the tool's text result; the composition root builds it over the blocks
# with the serving tools (api.composition.tool_index).
ToolRunner = Callable[[str, dict[str, str]], str]
ToolIndex = Callable[[Sequence[ManualBlock]], ToolRunner]

# Questions that need no tool, answered directly; train and test wordings are disjoint.
_HELLO = (
    "Hello! Ask me about the vehicle service manual: specifications, procedures, wiring or "
    "fault codes."
)
_THANKS = "You're welcome. Ask me anything else about the service manual."
_ABOUT = (
    "I answer questions from the vehicle service manual: I can look up specifications and "
    "fault codes, and search procedures, explanations and wiring."
)
NO_TOOL_QUESTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": (
        ("Hello", _HELLO),
        ("Hi there!", _HELLO),
        ("Good morning.", _HELLO),
        ("Hey, are you there?", _HELLO),
        ("Good afternoon!", _HELLO),
        ("Thanks!", _THANKS),
        ("Thank you, that helps.", _THANKS),
        ("Great, thanks a lot.", _THANKS),
        ("Cheers, that's all.", _THANKS),
        ("What can you do?", _ABOUT),
        ("Who are you?", _ABOUT),
        ("How can you help me?", _ABOUT),
        ("What kind of questions can I ask?", _ABOUT),
        ("Are you a chatbot?", _ABOUT),
    ),
    "val": (("Hi!", _HELLO), ("Thanks very much.", _THANKS), ("What are you for?", _ABOUT)),
    "test": (
        ("Hello, good evening.", _HELLO),
        ("Hey!", _HELLO),
        ("Many thanks.", _THANKS),
        ("Thank you!", _THANKS),
        ("What do you do?", _ABOUT),
        ("What can I ask you?", _ABOUT),
    ),
}


@dataclass(frozen=True)
class ToolQuestion:
    """A question with its right first step: ``tool`` (one of :data:`CHOICES`) and its
    ``arguments`` (empty for ``none``), and the reference answer."""

    question: str
    tool: str
    arguments: dict[str, str]
    answer: str
    kind: str
    block_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "tool": self.tool,
            "arguments": self.arguments,
            "answer": self.answer,
            "kind": self.kind,
            "block_id": self.block_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolQuestion:
        return cls(
            str(data["question"]),
            str(data["tool"]),
            {str(k): str(v) for k, v in dict(data.get("arguments") or {}).items()},
            str(data.get("answer", "")),
            str(data.get("kind", "")),
            str(data.get("block_id", "")),
        )


@dataclass
class ToolExamples:
    """Tool-use examples and what went into them (the data card's ``tools`` section)."""

    examples: list[SFTExample] = field(default_factory=list)
    questions_per_tool: dict[str, int] = field(default_factory=dict)
    multi_step: int = 0
    dropped_not_found: int = 0

    def card(self) -> dict[str, Any]:
        return {
            "examples": len(self.examples),
            "questions_per_tool": self.questions_per_tool,
            "multi_step": self.multi_step,
            "dropped_not_found": self.dropped_not_found,
        }


def query_text(question: str) -> str:
    """A question as a query argument: without its task prefix, at most
    :data:`MAX_ARGUMENT_CHARS` characters (cut at a word).

    >>> query_text("[SPEC] What is the oil capacity?")
    'What is the oil capacity?'
    >>> len(query_text("word " * 40)) <= MAX_ARGUMENT_CHARS
    True
    """
    text = _PREFIX.sub("", question).strip()
    if len(text) <= MAX_ARGUMENT_CHARS:
        return text
    return text[: MAX_ARGUMENT_CHARS + 1].rsplit(" ", 1)[0].rstrip()


def right_call(question: QAPair) -> tuple[str, dict[str, str]]:
    """The right first call for a manual question: a fault code in a troubleshooting question
    goes to the fault-code lookup, a spec question to the spec lookup, the rest to search.

    >>> q = QAPair("1", "b1", "TROUBLESHOOTING", "train", "What does P0117 mean?", "...")
    >>> right_call(q)
    ('lookup_fault_code', {'code': 'P0117'})
    >>> right_call(QAPair("2", "b2", "SPEC", "train", "Oil capacity?", "4.5 L"))
    ('lookup_spec', {'query': 'Oil capacity?'})
    """
    code = _DTC.search(question.question)
    if question.kind == "TROUBLESHOOTING" and code:
        return "lookup_fault_code", {"code": code.group(0)}
    tool = "lookup_spec" if question.kind == "SPEC" else "search_manual"
    return tool, {"query": query_text(question.question)}


def tool_questions(questions: Sequence[QAPair], split: str = "train") -> list[ToolQuestion]:
    """``questions`` (answerable ones) with their right first call, then the no-tool
    questions of ``split``.

    >>> found = tool_questions([QAPair("1", "b1", "SPEC", "test", "Gap?", "0.8 mm")], "test")
    >>> found[0].tool, found[-1].tool, len(found) == 1 + len(NO_TOOL_QUESTIONS["test"])
    ('lookup_spec', 'none', True)
    """
    result = []
    for q in questions:
        if not q.answerable:
            continue
        tool, arguments = right_call(q)
        result.append(ToolQuestion(q.question, tool, arguments, q.answer, q.kind, q.block_id))
    result += [
        ToolQuestion(question, NO_TOOL, {}, answer, "OTHER")
        for question, answer in NO_TOOL_QUESTIONS[split]
    ]
    return result


def tools_prompt(tools: Sequence[dict[str, Any]] = TOOL_FUNCTIONS) -> str:
    """The agent's system prompt with the tool list, as serving writes it for a chat template
    that does not know tools.

    >>> tools_prompt().splitlines()[2]
    'You can call these tools:'
    """
    listing = "\n".join(json.dumps(t, separators=(",", ":")) for t in tools)
    hint = (
        f"You can call these tools:\n{listing}\nTo call one, answer only with "
        f'{CALL_OPEN}{{"name": <tool name>, "arguments": {{...}}}}{CALL_CLOSE}'
    )
    return f"{AGENT_PROMPT}\n\n{hint}"


def call_text(name: str, arguments: dict[str, str], *, answer: bool) -> str:
    """A tool call as text: compact as the grammar makes the model write it (``answer``), or
    as serving writes an earlier call back into the conversation.

    >>> call_text("lookup_fault_code", {"code": "P0117"}, answer=True)
    '<tool_call>{"name":"lookup_fault_code","arguments":{"code":"P0117"}}</tool_call>'
    >>> call_text("lookup_fault_code", {"code": "P0117"}, answer=False)
    '<tool_call>{"name": "lookup_fault_code", "arguments": {"code": "P0117"}}</tool_call>'
    """
    payload = {"name": name, "arguments": arguments}
    body = json.dumps(payload, separators=(",", ":")) if answer else json.dumps(payload)
    return f"{CALL_OPEN}{body}{CALL_CLOSE}"


def response_text(result: str) -> str:
    """A tool's result as the conversation carries it back to the model."""
    return f"<tool_response>\n{result}\n</tool_response>"


def conversation_examples(
    question: ToolQuestion, run_tool: ToolRunner
) -> tuple[list[SFTExample], int]:
    """The examples of one question — one per assistant turn — and the number of tool calls
    made (0: answered directly). No examples when no lookup finds the question's block.

    >>> q = ToolQuestion("Oil capacity?", "lookup_spec", {"query": "Oil capacity?"}, "4.5 L",
    ...                  "SPEC", "b1")
    >>> found, steps = conversation_examples(q, lambda name, args: "[b1] Oil capacity: 4.5 L")
    >>> steps, [e.messages[-1]["content"] for e in found]
    (1, ['<tool_call>{"name":"lookup_spec","arguments":{"query":"Oil capacity?"}}</tool_call>', '4.5 L'])
    """
    messages: list[dict[str, str]] = [
        {"role": "system", "content": tools_prompt()},
        {"role": "user", "content": question.question},
    ]
    kind, group = f"TOOL:{question.tool}", question.block_id or question.question
    examples: list[SFTExample] = []
    steps = [(question.tool, question.arguments)] if question.tool != NO_TOOL else []
    if question.tool not in (NO_TOOL, "search_manual"):  # a lookup that misses: then search
        steps.append(("search_manual", {"query": query_text(question.question)}))
    calls = 0
    for name, arguments in steps:
        reply = {"role": "assistant", "content": call_text(name, arguments, answer=True)}
        examples.append(SFTExample((*messages, reply), kind, group))
        result = run_tool(name, arguments)
        calls += 1
        messages += [
            {"role": "assistant", "content": call_text(name, arguments, answer=False)},
            {"role": "user", "content": response_text(result)},
        ]
        if f"[{question.block_id}]" in result:
            break
    else:
        if steps:
            return [], calls
    answer = {"role": "assistant", "content": question.answer}
    examples.append(SFTExample((*messages, answer), kind, group))
    return examples, calls


def tool_examples(
    questions: Sequence[ToolQuestion],
    run_tool: ToolRunner,
    *,
    share: float = 1.0,
    seed: int = 42,
) -> ToolExamples:
    """Tool-use examples for a seeded ``share`` of ``questions``, balanced by first tool: each
    tool's questions are drawn (whole copies first, then a seeded sample) up to the count of
    the tool with the most.

    >>> qs = [ToolQuestion(f"Gap {i}?", "lookup_spec", {"query": f"Gap {i}?"}, "1 mm", "SPEC",
    ...                    f"b{i}") for i in range(4)]
    >>> qs += [ToolQuestion("Hi", "none", {}, "Hello!", "OTHER")]
    >>> made = tool_examples(qs, lambda name, args: f"[b{args['query'][4]}] Gap: 1 mm")
    >>> made.questions_per_tool
    {'lookup_spec': 4, 'none': 4}
    """
    if not 0 < share <= 1:
        raise DatasetError(f"data.tool_share={share}: use a value above 0 and at most 1")
    rng = random.Random(seed + 3)
    by_tool: dict[str, list[tuple[list[SFTExample], int]]] = {}
    made = ToolExamples()
    for question in questions:
        if question.tool != NO_TOOL and rng.random() >= share:
            continue
        examples, calls = conversation_examples(question, run_tool)
        if not examples:
            made.dropped_not_found += 1
            continue
        by_tool.setdefault(question.tool, []).append((examples, calls))
    if not by_tool:
        return made
    largest = max(len(chains) for chains in by_tool.values())
    for tool in sorted(by_tool):
        chains = by_tool[tool]
        copies, rest = divmod(largest, len(chains))
        drawn = chains * copies + rng.sample(chains, rest)
        made.questions_per_tool[tool] = len(drawn)
        made.multi_step += sum(calls > 1 for _, calls in drawn)
        made.examples += [e for examples, _ in drawn for e in examples]
    return made


def trained_for_tools(adapter_dir: Path) -> bool:
    """Whether the adapter in ``adapter_dir`` learned tool use: its data card
    (``data/card.json``) counts tool-use examples."""
    card = adapter_dir / "data" / "card.json"
    if not card.is_file():
        return False
    tools = json.loads(card.read_text("utf-8")).get("tools") or {}
    return bool(tools.get("examples"))
