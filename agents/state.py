"""Graph state: what each graph carries between nodes (JSON-friendly, so it checkpoints).

Nodes return partial updates. ``timings`` and ``errors`` have reducers so that parallel branches
can both write them in one step.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages


def merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """Reducer for dict channels that parallel nodes write to.

    >>> merge({"a": 1}, {"b": 2})
    {'a': 1, 'b': 2}
    """
    return {**(left or {}), **(right or {})}


class Span(TypedDict):
    """When a node ran, in ms since the run started (overlapping spans ran in parallel)."""

    start_ms: float
    end_ms: float
    ms: float


class AssessState(TypedDict, total=False):
    images: list[bytes]
    claim: dict[str, Any]  # ClaimContext as JSON
    started: float  # epoch seconds, set by the first node
    damages: list[dict[str, Any]]  # ingest.assessment.Damage as JSON
    manual: list[dict[str, Any]]  # retrieved manual blocks: id, text, score, part
    history: list[dict[str, Any]]  # this VIN's / policy's earlier claims
    similar: list[dict[str, Any]]  # claims with the closest descriptions, other vehicles
    photo_matches: list[dict[str, Any]]  # earlier claims of other policies with the same photos
    costs: list[dict[str, Any]]  # per damage: part, type, severity, min, max, basis
    fraud: dict[str, Any]
    report: str
    cited: list[str]
    vision: dict[str, Any]  # the fine-tuned VLM's parsed answer
    assessment: dict[str, Any]  # the final ingest.assessment.Assessment as JSON
    models: Annotated[dict[str, str], merge]
    timings: Annotated[dict[str, Span], merge]
    errors: Annotated[list[str], operator.add]


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    mode: str  # base | rag | finetuned | finetuned-rag | agent
    started: float
    context: list[dict[str, Any]]  # retrieved manual blocks: id, text, score
    tool_rounds: int
    models: Annotated[dict[str, str], merge]
    timings: Annotated[dict[str, Span], merge]
