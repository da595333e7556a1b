"""Field-by-field agreement of the fine-tuned and agentic Assessments of the same photos."""

from __future__ import annotations

from typing import Any

from ingest.assessment import Assessment


def _overlap(left: set[Any], right: set[Any]) -> dict[str, Any]:
    """Both sets, what they share, and the Jaccard index (1.0 when both are empty)."""
    union = left | right
    return {
        "finetuned": sorted(left),
        "agentic": sorted(right),
        "shared": sorted(left & right),
        "jaccard": round(len(left & right) / len(union), 4) if union else 1.0,
    }


def _same(left: Any, right: Any) -> dict[str, Any]:
    return {"finetuned": left, "agentic": right, "equal": left == right}


def _damages(finetuned: Assessment, agentic: Assessment) -> dict[str, Any]:
    """The (part, type) pairs as :func:`_overlap` gives them, and ``severity_differs``: the
    shared pairs whose severities the two approaches state differently.

    >>> f = Assessment(approach="finetuned", damages=[
    ...     {"type": "dent", "part": "hood", "severity": "minor"},
    ...     {"type": "scratch", "part": "hood", "severity": "minor"}],
    ...     overall_severity="minor", cost_estimate={"min": 1, "max": 2},
    ...     fraud={"risk": 0.1, "level": "low"})
    >>> a = f.model_copy(update={"approach": "agentic", "damages": [
    ...     f.damages[0].model_copy(update={"severity": "severe"}), f.damages[1]]})
    >>> _damages(f, a)["severity_differs"]
    ['hood:dent']
    """
    stated: dict[str, dict[str, set[str]]] = {}
    for name, assessment in (("finetuned", finetuned), ("agentic", agentic)):
        for d in assessment.damages:
            stated.setdefault(f"{d.part}:{d.type}", {}).setdefault(name, set()).add(d.severity)
    pairs = _overlap(
        {key for key, by in stated.items() if "finetuned" in by},
        {key for key, by in stated.items() if "agentic" in by},
    )
    differs = [k for k in pairs["shared"] if stated[k]["finetuned"] != stated[k]["agentic"]]
    return {**pairs, "severity_differs": differs}


def agreement(finetuned: Assessment, agentic: Assessment) -> dict[str, Any]:
    """How far the two approaches agree: each field, and how many of the ``checked`` ones match.

    >>> a = Assessment(approach="agentic", damages=[], overall_severity="minor",
    ...                cost_estimate={"min": 100, "max": 300}, fraud={"risk": 0.1, "level": "low"})
    >>> f = a.model_copy(update={"approach": "finetuned"})
    >>> result = agreement(f, a)
    >>> result["agreed"], result["checked"]
    (6, 6)
    """
    f_cost, a_cost = finetuned.cost_estimate, agentic.cost_estimate
    shared_cost = min(f_cost.max, a_cost.max) - max(f_cost.min, a_cost.min)
    same_currency = f_cost.currency == a_cost.currency
    fields = {
        "damage_types": _overlap(
            {d.type for d in finetuned.damages}, {d.type for d in agentic.damages}
        ),
        "damaged_parts": _overlap(
            {d.part for d in finetuned.damages}, {d.part for d in agentic.damages}
        ),
        "damages": _damages(finetuned, agentic),
        "overall_severity": _same(finetuned.overall_severity, agentic.overall_severity),
        "cost_estimate": {
            "finetuned": [f_cost.min, f_cost.max],
            "agentic": [a_cost.min, a_cost.max],
            "currency": f_cost.currency if same_currency else None,
            "overlap": same_currency and shared_cost >= 0,
            "shared_range": round(max(shared_cost, 0.0), 2) if same_currency else None,
        },
        "fraud_level": _same(finetuned.fraud.level, agentic.fraud.level),
        "repair_actions": _overlap(
            {f"{r.part}:{r.action}" for r in finetuned.repair_recommendations},
            {f"{r.part}:{r.action}" for r in agentic.repair_recommendations},
        ),
    }
    checks = [
        fields["damage_types"]["jaccard"] == 1.0,
        fields["damaged_parts"]["jaccard"] == 1.0,
        fields["damages"]["jaccard"] == 1.0,
        fields["overall_severity"]["equal"],
        fields["cost_estimate"]["overlap"],
        fields["fraud_level"]["equal"],
    ]
    return {**fields, "agreed": sum(checks), "checked": len(checks)}
