"""The agentic assessment: damage tool -> (manual retrieval || claims tools) -> cost estimate ->
fraud signals -> report by the fine-tuned LLaMA model -> Assessment.

Manual retrieval and the claims tools run in the same step, in parallel; their spans in
``timings`` overlap. A failing retrieval or claims tool is recorded in ``errors`` and the run goes
on without it (the report says so); the damage tool and the report model are required.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field, ValidationError

from agents import fraud, tools
from agents.backends.base import GenerationError
from agents.context import AgentContext
from agents.errors import AgentError
from agents.prompts import report_messages
from agents.state import AssessState, claim_of, photos_of
from agents.timing import timed, total_ms
from ingest.assessment import (
    Assessment,
    ClaimContext,
    CostEstimate,
    Damage,
    Evidence,
    RepairRecommendation,
)
from ingest.taxonomy import REPAIR_ACTION, SEVERITIES

NAME = "assess_agentic"
RECURSION_LIMIT = 16
REPORT_ATTEMPTS = 2  # the report model's first answer, and one repair attempt
TOTAL_LOSS_SEVERE = 3  # this many severe damages make a total loss


@timed("damage")
def detect_damage(state: AssessState, runtime: Runtime[AgentContext]) -> dict:
    context = runtime.context
    context.require(NAME, "damage_model")
    if not state.get("images"):
        raise AgentError("an assessment needs at least one image")
    photos = photos_of(state)
    try:
        damages = context.damage_model.detect(photos)
    except Exception as exc:
        raise AgentError(f"the damage model {context.damage_model.name!r} failed: {exc}") from exc
    update = {"damages": damages, "models": {"damage": context.damage_model.name}}
    if photos != state["images"]:
        update["images"] = photos  # given as bytes: the fraud check reuses these decodes
    return update


@timed("manual")
def retrieve_manual(state: AssessState, runtime: Runtime[AgentContext]) -> dict:
    context = runtime.context
    if not context.available("manuals"):
        return {"manual": [], "errors": ["manual retrieval is not configured"]}
    try:
        hits = tools.repair_procedures(context.manuals, state.get("damages", []), context.manual_k)
    except Exception as exc:
        return {"manual": [], "errors": [f"manual retrieval failed: {exc}"]}
    return {"manual": hits}


@timed("claims")
def check_claims(state: AssessState, runtime: Runtime[AgentContext]) -> dict:
    context = runtime.context
    if context.claims_db is None:
        return {"history": [], "similar": [], "photo_matches": [],
                "errors": ["the claims database is not configured"]}  # fmt: skip
    claim = claim_of(state) or ClaimContext()
    update: dict[str, Any] = {"history": [], "similar": [], "photo_matches": [], "errors": []}
    steps = {
        "history": lambda: tools.claims_history(context.claims_db, claim.vin, claim.policy_id),
        "similar": lambda: (
            tools.similar_claims(
                context.claims_db, context.claims_index, claim.description, claim.vin
            )
            if claim.description and context.available("claims_index")
            else []
        ),
        "photo_matches": lambda: _photo_matches(state, context, claim),
    }
    for key, step in steps.items():
        try:
            update[key] = step()
        except Exception as exc:
            update["errors"].append(f"claims tool {key!r} failed: {exc}")
    return update


def _photo_matches(state: AssessState, context: AgentContext, claim: ClaimContext) -> list[dict]:
    if context.open_photo is None:
        return []
    candidates: dict[str, dict] = {}
    for damage in state.get("damages", []):
        for row in context.claims_db.photo_candidates(
            damage.part, damage.type, before=claim.incident_date
        ):
            candidates[row["claim_id"]] = row
    return fraud.photo_matches(
        photos_of(state), list(candidates.values()), claim.policy_id, context.open_photo,
        context.photo_hashes,
    )  # fmt: skip


@timed("cost")
def estimate_cost(state: AssessState, runtime: Runtime[AgentContext]) -> dict:
    context = runtime.context
    if context.claims_db is None:
        return {"costs": [], "errors": ["cost estimate: the claims database is not configured"]}
    try:
        return {"costs": tools.cost_ranges(context.claims_db, state.get("damages", []))}
    except Exception as exc:
        return {"costs": [], "errors": [f"cost estimate failed: {exc}"]}


@timed("fraud")
def detect_fraud(state: AssessState, runtime: Runtime[AgentContext]) -> dict:
    costs = state.get("costs", [])
    expected = (sum(c["min"] for c in costs), sum(c["max"] for c in costs))
    found = fraud.signals(
        claim_of(state),
        state.get("damages", []),
        state.get("history", []),
        state.get("similar", []),
        state.get("photo_matches", []),
        expected,
    )
    return {"fraud": fraud.assess(found)}


def _evidence(state: AssessState) -> list[Evidence]:
    manual = state.get("manual", [])
    items = [Evidence(source="manual", id=h["id"], score=h["score"]) for h in manual]
    claims = {h["claim_id"]: 1.0 for h in state.get("history", [])}
    claims.update({h["claim_id"]: h["score"] for h in state.get("similar", [])})
    claims.update({h["claim_id"]: 1.0 for h in state.get("photo_matches", [])})
    items += [Evidence(source="claims", id=i, score=s) for i, s in claims.items()]
    return items


@functools.lru_cache(maxsize=256)
def _report_schema(evidence_ids: tuple[str, ...]) -> type[BaseModel]:
    """The report model's output: text, and citations limited to the evidence at hand (cached:
    building a pydantic class per request costs milliseconds)."""
    cited_type: Any = Literal[tuple(evidence_ids)] if evidence_ids else str

    class Report(BaseModel):
        report: str = Field(max_length=700)
        cited: list[cited_type] = Field(default_factory=list, max_length=6)

    return Report


@timed("report")
def write_report(state: AssessState, runtime: Runtime[AgentContext]) -> dict:
    context = runtime.context
    context.require(NAME, "llm")
    llm = context.chat_model(finetuned=context.finetuned_adapter is not None)
    evidence = _evidence(state)
    facts = {
        "damages": [d.model_dump(mode="json") for d in state.get("damages", [])],
        "costs": state.get("costs", []),
        "fraud_signals": state["fraud"].signals,
        "manual": [{"id": h["id"], "text": h["text"][:300]} for h in state.get("manual", [])],
        "claims": [e.id for e in evidence if e.source == "claims"],
        "unavailable": state.get("errors", []),
    }
    schema = _report_schema(tuple(e.id for e in evidence))
    structured = llm.with_structured_output(schema, include_raw=True)
    feedback = None
    for _ in range(REPORT_ATTEMPTS):
        try:
            # the chat model's own max_tokens bounds the report (a cap set by the caller holds)
            result = structured.invoke(report_messages(facts, feedback))
        except GenerationError as exc:
            feedback = _short(exc)
            continue
        if result["parsed"] is not None:
            report = result["parsed"]
            return {
                "report": report.report,
                "cited": list(dict.fromkeys(report.cited)),
                "models": {"report": getattr(llm, "model_label", type(llm).__name__)},
            }
        feedback = _short(result["parsing_error"])
    raise AgentError(
        f"the report model returned invalid output {REPORT_ATTEMPTS} times (last: {feedback})"
    )


@timed("assemble")
def assemble(state: AssessState, runtime: Runtime[AgentContext]) -> dict:
    damages = state.get("damages", [])
    costs = state.get("costs", [])
    by_part = {}
    for hit in state.get("manual", []):
        by_part.setdefault(hit["part"], hit["id"])
    recommendations = [
        RepairRecommendation(
            part=d.part,
            action=REPAIR_ACTION[(d.type, d.severity)],
            reference=by_part.get(d.part, ""),
        )
        for d in damages
    ]
    cited = set(state.get("cited", []))
    evidence = sorted(_evidence(state), key=lambda e: (e.id not in cited, -e.score))
    timings = {**state.get("timings", {})}
    try:
        assessment = Assessment(
            approach="agentic",
            damages=damages,
            overall_severity=overall_severity(damages),
            cost_estimate=CostEstimate(
                min=round(sum(c["min"] for c in costs), 2),
                max=round(sum(c["max"] for c in costs), 2),
            ),
            repair_recommendations=recommendations,
            fraud=state["fraud"],
            report=state.get("report", ""),
            evidence=evidence,
            timings_ms={k: v["ms"] for k, v in timings.items()} | {"total": total_ms(timings)},
            models=state.get("models", {}),
        )
    except ValidationError as exc:
        raise AgentError(f"the tools' results do not form a valid Assessment: {exc}") from exc
    return {"assessment": assessment}


def overall_severity(damages: list[Damage]) -> str:
    if not damages:
        return "minor"
    if sum(d.severity == "severe" for d in damages) >= TOTAL_LOSS_SEVERE:
        return "total_loss"
    return max((d.severity for d in damages), key=SEVERITIES.index)


def _short(error: Any) -> str:
    return str(error).splitlines()[0][:300] if error else "no output"


def build(checkpointer: Any = None) -> Any:
    builder = StateGraph(AssessState, context_schema=AgentContext)
    builder.add_node("damage", detect_damage)
    builder.add_node("manual", retrieve_manual)
    builder.add_node("claims", check_claims)
    builder.add_node("cost", estimate_cost)
    builder.add_node("fraud", detect_fraud)
    builder.add_node("report", write_report)
    builder.add_node("assemble", assemble)
    builder.add_edge(START, "damage")
    builder.add_edge("damage", "manual")
    builder.add_edge("damage", "claims")
    builder.add_edge("claims", "cost")
    builder.add_edge(["manual", "cost"], "fraud")
    builder.add_edge("fraud", "report")
    builder.add_edge("report", "assemble")
    builder.add_edge("assemble", END)
    compiled = builder.compile(checkpointer=checkpointer, name=NAME)
    return compiled.with_config(recursion_limit=RECURSION_LIMIT)


graph = build()
