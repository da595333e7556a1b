"""Tools over the manuals and the claims history.

Plain functions that the assessment graphs call directly, and :func:`manual_tools`, the same
lookups as LangChain tools for the service-chat agent (bound to one retriever at run time);
:func:`tool_runner` runs those tools by name (what tool-use training examples show).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import date
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool

from ingest.assessment import Damage
from ingest.taxonomy import SEVERITIES, humanize

COST_MIN_CLAIMS = 3  # fewer past claims than this in a slice of history: try a wider slice


def search_manual(retriever: Any, query: str, k: int, kind: str | None = None) -> list[dict]:
    filter = {"kind": kind} if kind else None
    return [
        {"id": h.id, "text": h.text, "score": round(float(h.score), 4)}
        for h in retriever.search(query, k, filter)
    ]


def repair_procedures(retriever: Any, damages: Sequence[Damage], k: int) -> list[dict]:
    """Manual blocks on repairing each damaged part, best first, without repeats."""
    found: dict[str, dict] = {}
    for damage in damages:
        query = (
            f"{humanize(damage.type)} on the {humanize(damage.part)}: repair procedure and limits"
        )
        for hit in search_manual(retriever, query, k):
            found.setdefault(hit["id"], {**hit, "part": damage.part})
    return list(found.values())


def claims_history(database: Any, vin: str | None, policy_id: str | None) -> list[dict]:
    """Earlier claims of this VIN, and of this policy, oldest first."""
    claims = {}
    for key in ("vin", "policy_id"):
        value = vin if key == "vin" else policy_id
        if value:
            for claim in database.history(**{key: value}):
                claims[claim.claim_id] = claim
    return [_claim_json(c) for c in sorted(claims.values(), key=lambda c: c.incident_date)]


def similar_claims(
    database: Any, index: Any, description: str, exclude_vin: str | None, k: int = 5
) -> list[dict]:
    from rag.claims_db import similar_claims as search

    return [
        {**_claim_json(claim), "score": round(float(score), 4)}
        for claim, score in search(database, index, description, k, exclude_vin)
    ]


def cost_ranges(database: Any, damages: Sequence[Damage]) -> list[dict]:
    """Per damage, a cost range learnt from the claims history alone (fraud excluded), from the
    narrowest slice that holds at least ``COST_MIN_CLAIMS`` past claims; ``basis`` says which:

    1. the same part x type x severity: its interquartile range;
    2. the same part x type at the nearest other severity, scaled by the ratio of all past
       claims' medians at the two severities;
    3. every past claim of that severity, whatever the part;

    and no estimate (0-0) when the history has none of these.
    """
    ranges = []
    for d in damages:
        low, high, basis = _history_range(database, d)
        ranges.append(
            {
                "part": d.part,
                "type": d.type,
                "severity": d.severity,
                "min": round(low, 2),
                "max": round(high, 2),
                "basis": basis,
            }
        )
    return ranges


def _history_range(database: Any, d: Damage) -> tuple[float, float, str]:
    slice_ = f"{d.part} {d.type}"
    exact = database.cost_distribution(d.part, d.type, d.severity)
    if exact.count >= COST_MIN_CLAIMS:
        return exact.p25, exact.p75, f"{exact.count} past {d.severity} {slice_} claims (p25-p75)"
    severity = database.cost_distribution(None, None, d.severity)
    others = [
        (s, database.cost_distribution(d.part, d.type, s)) for s in SEVERITIES if s != d.severity
    ]
    others = [(s, stats) for s, stats in others if stats.count >= COST_MIN_CLAIMS]
    # a severity whose past claims' median is 0 (e.g. claims paid nothing) gives no ratio
    others = [(s, st) for s, st in others if database.cost_distribution(None, None, s).p50]
    if others and severity.count >= COST_MIN_CLAIMS:
        # the nearest severity (then the most claims); history says how severities' costs differ
        rank = SEVERITIES.index(d.severity)
        other, stats = min(
            others, key=lambda pair: (abs(SEVERITIES.index(pair[0]) - rank), -pair[1].count)
        )
        reference = database.cost_distribution(None, None, other)
        ratio = severity.p50 / reference.p50
        return (
            stats.p25 * ratio,
            stats.p75 * ratio,
            f"{stats.count} past {other} {slice_} claims (p25-p75) x {ratio:.2f}, the ratio of "
            f"all past {d.severity} to {other} claims' medians",
        )
    if severity.count >= COST_MIN_CLAIMS:
        return (
            severity.p25,
            severity.p75,
            f"no similar past claims: all {severity.count} past {d.severity} claims (p25-p75)",
        )
    return 0.0, 0.0, "no past claims to estimate from"


def manual_tools(retriever: Any, k: int = 3) -> list[BaseTool]:
    """search_manual, lookup_spec and lookup_fault_code over one manuals retriever."""

    def search_manual_tool(query: str) -> str:
        """Search the vehicle service manuals (procedures, explanations, wiring, specs)."""
        return _blocks(search_manual(retriever, query, k))

    def lookup_spec(query: str) -> str:
        """Look up a specification value (torque, capacity, gap, pressure...) in the manuals."""
        return _blocks(search_manual(retriever, query, k, kind="SPEC"))

    def lookup_fault_code(code: str) -> str:
        """Look up a diagnostic trouble code such as P0117: meaning, causes and checks."""
        hits = search_manual(retriever, code, k, kind="TROUBLESHOOTING")
        exact = [h for h in hits if code.strip().upper() in h["text"].upper()]
        if not exact:
            return f"No troubleshooting entry mentions {code!r}."
        return _blocks(exact)

    return [
        StructuredTool.from_function(search_manual_tool, name="search_manual"),
        StructuredTool.from_function(lookup_spec),
        StructuredTool.from_function(lookup_fault_code),
    ]


def tool_runner(retriever: Any) -> Callable[[str, dict[str, str]], str]:
    """Runs the service-chat agent's tools (:func:`manual_tools`, as serving runs them) over
    ``retriever`` by name and arguments, their result as the agent reads it; ``ValueError``
    for an unknown tool."""
    tools = {t.name: t for t in manual_tools(retriever)}

    def run(name: str, arguments: dict[str, str]) -> str:
        if name not in tools:
            raise ValueError(f"no tool named {name!r}; use one of {', '.join(tools)}")
        return str(tools[name].invoke(arguments))

    return run


def _blocks(hits: list[dict]) -> str:
    if not hits:
        return "Nothing found in the manuals."
    return "\n---\n".join(f"[{h['id']}] {h['text']}" for h in hits)


def _claim_json(claim: Any) -> dict:
    data = asdict(claim)
    for key in ("incident_date", "policy_start"):
        if isinstance(data.get(key), date):
            data[key] = data[key].isoformat()
    data["photo_paths"] = list(data.get("photo_paths") or ())
    return data
