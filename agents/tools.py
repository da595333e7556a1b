"""Tools over the manuals and the claims history.

Plain functions that the assessment graphs call directly, and :func:`manual_tools`, the same
lookups as LangChain tools for the service-chat agent (bound to one retriever at run time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import date
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool

from ingest.assessment import Damage
from ingest.taxonomy import humanize, repair_cost

COST_MIN_CLAIMS = 3  # fewer similar past claims than this: the price table gives the range


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
    """Per damage: the interquartile range of past claims for that part x type x severity, or the
    price table +-25 % when there are too few of them."""
    ranges = []
    for d in damages:
        stats = database.cost_distribution(d.part, d.type, d.severity)
        if stats.count >= COST_MIN_CLAIMS:
            low, high, basis = stats.p25, stats.p75, f"{stats.count} past claims (p25-p75)"
        else:
            expected = repair_cost(d.part, d.type, d.severity)
            low, high, basis = expected * 0.8, expected * 1.25, "price table +-25%"
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
