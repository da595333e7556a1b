"""How well a router picks the service-chat agent's tools (``tunegraph eval tools``).

Each held-out question (the test split, never trained on) has a right first step — a manual
tool with its arguments, or no tool (:mod:`finetune.tool_data`). The chat graph runs it in
``agent`` mode with each router under test — the base model choosing tools, the regex rules,
the fine-tuned model choosing tools — and the first call it makes is compared with the right
one: tool-choice accuracy, argument exact match (when the tool was right), the answer's quality
(SPEC exact match, ROUGE-L for the rest), tool calls per question, the share of answers whose
calls parsed, and a confusion table (right tool -> chosen tool).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage

from agents.backends.base import GenerationError
from agents.context import AgentContext
from agents.graphs import service_chat
from finetune.datasets import DatasetError
from finetune.metrics import rouge_l, spec_exact_match
from finetune.tool_data import CHOICES, NO_TOOL, ToolQuestion, tool_questions
from ingest.records import QAPair

UNPARSED = "unparsed"  # the chosen "tool" of an answer whose tool call did not parse
_PREFIX = re.compile(r"^\s*\[[A-Z]+\]\s*")


@dataclass(frozen=True)
class ToolOutcome:
    """What a router did with one question: its first step, its answer, its tool calls."""

    question: ToolQuestion
    chosen: str  # the first call's tool, "none", or UNPARSED
    arguments: dict[str, Any]
    answer: str
    steps: int

    @property
    def parsed(self) -> bool:
        return self.chosen != UNPARSED


@dataclass
class RouterScore:
    """One router's scores over the held-out questions (fractions from 0 to 1)."""

    router: str
    n: int
    tool_accuracy: float
    argument_match: float | None  # among questions whose right tool (not "none") was chosen
    spec_exact_match: float | None
    rouge_l: float | None
    steps_per_question: float
    parse_rate: float
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # right -> chosen -> n
    # each question whose first step was wrong: question, right tool, chosen tool, arguments
    wrong: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def held_out_questions(path: Path) -> list[ToolQuestion]:
    """The answerable questions of a QA JSONL file (the test split) with their right first
    step, plus the no-tool questions of the test split."""
    try:
        lines = [line for line in path.read_text("utf-8").splitlines() if line.strip()]
        pairs = [QAPair(**json.loads(line)) for line in lines]
    except (OSError, ValueError, TypeError) as exc:
        raise DatasetError(
            f"{path}: not a QA JSONL file (lines with id, block_id, kind, split, question, "
            f"answer): {exc}"
        ) from None
    if any(p.split in ("train", "val") for p in pairs):
        raise DatasetError(f"{path} holds train or val questions: give the test split")
    return tool_questions(pairs, "test")


def sample_by_tool(questions: Sequence[ToolQuestion], n: int, seed: int = 0) -> list[ToolQuestion]:
    """A seeded sample of ``n`` questions spread evenly over their right tools (a tool with
    fewer questions gives all it has; the others share the rest), in their original order.

    >>> qs = [ToolQuestion(str(i), "lookup_spec", {}, "", "SPEC") for i in range(9)]
    >>> qs += [ToolQuestion("Hi", "none", {}, "", "OTHER")]
    >>> [q.tool for q in sample_by_tool(qs, 4)].count("none")
    1
    >>> def drawn(seed):
    ...     return [q.question for q in sample_by_tool(qs, 4, seed)]
    >>> drawn(0) == drawn(0), drawn(0) == drawn(1)
    (True, False)
    """
    rng = random.Random(seed)
    by_tool: dict[str, list[int]] = {}
    for index, question in enumerate(questions):
        by_tool.setdefault(question.tool, []).append(index)
    chosen: list[int] = []
    tools = sorted(by_tool, key=lambda t: len(by_tool[t]))
    for position, tool in enumerate(tools):
        share = (n - len(chosen)) // (len(tools) - position)
        chosen += rng.sample(by_tool[tool], min(share, len(by_tool[tool])))
    return [questions[i] for i in sorted(chosen)]


def same_arguments(given: dict[str, Any], right: dict[str, str]) -> bool:
    """Arguments match when each value is the same up to case, spacing, a task prefix and end
    punctuation.

    >>> same_arguments({"query": "[SPEC] Oil  capacity?"}, {"query": "oil capacity"})
    True
    >>> same_arguments({"code": "P0117", "x": "1"}, {"code": "P0117"})
    False
    """

    def norm(value: Any) -> str:
        text = _PREFIX.sub("", str(value))
        return " ".join(text.lower().split()).rstrip(".?! ")

    return set(given) == set(right) and all(norm(given[k]) == norm(right[k]) for k in right)


def run_question(graph: Any, context: AgentContext, question: ToolQuestion) -> ToolOutcome:
    """One question through the chat graph in ``agent`` mode."""
    try:
        state = graph.invoke(
            {"messages": [HumanMessage(question.question)], "mode": "agent"}, context=context
        )
    except GenerationError as exc:
        if "malformed tool call" not in str(exc):
            raise
        return ToolOutcome(question, UNPARSED, {}, "", 0)
    calls = service_chat.tool_calls(state)
    first = calls[0] if calls else {"name": NO_TOOL, "arguments": {}}
    answer = state["messages"][-1].text
    return ToolOutcome(question, first["name"], dict(first["arguments"]), answer, len(calls))


def score(router: str, outcomes: Sequence[ToolOutcome]) -> RouterScore:
    """Scores of one router's outcomes.

    >>> q = ToolQuestion("Gap?", "lookup_spec", {"query": "Gap?"}, "0.8 mm", "SPEC", "b1")
    >>> hi = ToolQuestion("Hi", "none", {}, "Hello!", "OTHER")
    >>> s = score("x", [ToolOutcome(q, "lookup_spec", {"query": "gap"}, "0.8 mm", 1),
    ...                 ToolOutcome(hi, "search_manual", {"query": "Hi"}, "Hello!", 1)])
    >>> s.tool_accuracy, s.argument_match, s.spec_exact_match, s.confusion["none"]
    (0.5, 1.0, 1.0, {'search_manual': 1})
    >>> s.wrong
    [{'question': 'Hi', 'right': 'none', 'chosen': 'search_manual', 'arguments': {'query': 'Hi'}}]
    """
    n = len(outcomes)
    if not n:
        raise DatasetError("no held-out questions to evaluate the tool routers on")
    right = [o for o in outcomes if o.chosen == o.question.tool]
    with_arguments = [o for o in right if o.question.tool != NO_TOOL]
    spec = [o for o in outcomes if o.question.kind == "SPEC"]
    rest = [o for o in outcomes if o.question.kind != "SPEC"]
    confusion: dict[str, dict[str, int]] = {}
    for o in outcomes:
        row = confusion.setdefault(o.question.tool, {})
        row[o.chosen] = row.get(o.chosen, 0) + 1
    return RouterScore(
        router=router,
        n=n,
        tool_accuracy=round(len(right) / n, 4),
        argument_match=_mean(
            same_arguments(o.arguments, o.question.arguments) for o in with_arguments
        ),
        spec_exact_match=_mean(spec_exact_match(o.answer, o.question.answer) for o in spec),
        rouge_l=_mean(rouge_l(o.answer, o.question.answer) for o in rest),
        steps_per_question=round(sum(o.steps for o in outcomes) / n, 4),
        parse_rate=round(sum(o.parsed for o in outcomes) / n, 4),
        confusion={k: dict(sorted(v.items())) for k, v in sorted(confusion.items())},
        wrong=[
            {
                "question": o.question.question,
                "right": o.question.tool,
                "chosen": o.chosen,
                "arguments": o.arguments,
            }
            for o in outcomes
            if o.chosen != o.question.tool
        ],
    )


def evaluate_tools(
    questions: Sequence[ToolQuestion],
    routers: dict[str, AgentContext],
    *,
    graph: Any = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> dict[str, RouterScore]:
    """Every router (name -> the context it runs with) on every question."""
    graph = graph or service_chat.graph
    results = {}
    for name, context in routers.items():
        items = progress(questions) if progress else questions
        outcomes = [run_question(graph, context, q) for q in items]
        results[name] = score(name, outcomes)
    return results


def router_contexts(
    llm: Any, manuals: Any, adapter: str | None, tool_adapter: bool, **options: Any
) -> dict[str, AgentContext]:
    """The routers compared: the base model choosing tools, the regex rules (answering with
    the fine-tuned adapter when there is one), and the fine-tuned model choosing tools."""

    def context(**fields: Any) -> AgentContext:
        return AgentContext(llm=llm, manuals=manuals, **options, **fields)

    routers = {"base": context(router="model", finetuned_adapter=None)}
    routers["rules"] = context(router="rules", finetuned_adapter=adapter)
    if adapter is not None:
        routers["finetuned"] = context(
            router="model", finetuned_adapter=adapter, tool_adapter=tool_adapter
        )
    return routers


def markdown(results: dict[str, RouterScore]) -> str:
    """The scores as a Markdown table, then each router's confusion table."""

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        "| router | n | tool accuracy | argument match | SPEC exact match | ROUGE-L | "
        "steps/question | calls parsed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in results.values():
        lines.append(
            f"| {s.router} | {s.n} | {cell(s.tool_accuracy)} | {cell(s.argument_match)} | "
            f"{cell(s.spec_exact_match)} | {cell(s.rouge_l)} | {s.steps_per_question:.2f} | "
            f"{cell(s.parse_rate)} |"
        )
    for s in results.values():
        chosen = [c for c in (*CHOICES, UNPARSED) if any(c in row for row in s.confusion.values())]
        lines += ["", f"{s.router}: right tool (rows) -> chosen (columns)", ""]
        lines.append("| right \\ chosen | " + " | ".join(chosen) + " |")
        lines.append("| --- |" + " --- |" * len(chosen))
        for right in CHOICES:
            if right in s.confusion:
                row = s.confusion[right]
                lines.append(
                    f"| {right} | " + " | ".join(str(row.get(c, 0)) for c in chosen) + " |"
                )
    return "\n".join(lines)


def _mean(values: Iterable[bool | float]) -> float | None:
    found = [float(v) for v in values]
    return round(sum(found) / len(found), 4) if found else None
