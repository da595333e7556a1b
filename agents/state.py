"""Graph state: what each graph carries between nodes.

Records travel as themselves (pydantic models, :class:`~ingest.images.Photo`), never as their
JSON: they are serialised once, at the edge (the API's response, the comparison's records).
LangGraph's checkpoint serializer stores them, and its strict mode allows exactly the types
named in these annotations. Tool results without a record of their own stay plain dicts.

Nodes return partial updates. ``timings`` and ``errors`` have reducers so that parallel branches
can both write them in one step.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages

from ingest.assessment import Assessment, ClaimContext, Damage, Fraud, VisionAnswer
from ingest.images import Photo, as_photos


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
    images: list[Photo]  # bytes are accepted too (see photos_of())
    claim: ClaimContext | None  # its JSON dict is accepted too (see claim_of())
    started: float  # epoch seconds, set by the first node
    damages: list[Damage]
    manual: list[dict[str, Any]]  # retrieved manual blocks: id, text, score, part
    history: list[dict[str, Any]]  # this VIN's / policy's earlier claims
    similar: list[dict[str, Any]]  # claims with the closest descriptions, other vehicles
    photo_matches: list[dict[str, Any]]  # earlier claims of other policies with the same photos
    costs: list[dict[str, Any]]  # per damage: part, type, severity, min, max, basis
    fraud: Fraud
    report: str
    cited: list[str]
    vision: VisionAnswer  # the fine-tuned VLM's answer, parsed once
    assessment: Assessment
    models: Annotated[dict[str, str], merge]
    timings: Annotated[dict[str, Span], merge]
    errors: Annotated[list[str], operator.add]


def photos_of(state: AssessState) -> list[Photo]:
    """The request's photos as :class:`Photo` records (a caller may pass bytes: a node that
    decodes them returns these in its update, so that later nodes reuse the decode)."""
    return as_photos(state.get("images") or [])


def claim_of(state: AssessState) -> ClaimContext | None:
    """The request's claim context, if any (a caller may pass its JSON dict)."""
    raw = state.get("claim")
    return ClaimContext.model_validate(raw) if raw else None


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    mode: str  # base | rag | finetuned | finetuned-rag | agent
    started: float
    context: list[dict[str, Any]]  # retrieved manual blocks: id, text, score
    unsupported: bool  # retrieval found nothing that bears on the question: refuse
    tool_rounds: int
    models: Annotated[dict[str, str], merge]
    timings: Annotated[dict[str, Span], merge]
