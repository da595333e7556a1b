"""The fine-tuned assessment: images (+ claim context) -> one call of the fine-tuned
vision-language model -> Assessment.

The model answers with the Assessment's vision fields as JSON. An answer that does not parse or
validate is sent back once with the validation error; a second failure ends the run with an
:class:`AgentError` that quotes it.
"""

from __future__ import annotations

import json
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import ValidationError

from agents.context import AgentContext
from agents.errors import AgentError
from agents.state import AssessState, claim_of, photos_of
from agents.timing import timed, total_ms
from ingest.assessment import Assessment, Fraud, VisionAnswer

NAME = "assess_finetuned"
RECURSION_LIMIT = 8
ATTEMPTS = 2
# One model call sees no claims history: fraud is not assessed by this approach, every
# Assessment carries this risk whatever the photos and the claim say.
FRAUD_NOT_ASSESSED = Fraud(risk=0.0, level="low", signals=[])


def parse_answer(text: str | dict[str, Any]) -> VisionAnswer:
    """The model's answer — JSON text, or the JSON it was already read into by the model's
    assessor — validated once into a :class:`VisionAnswer`; ValueError says what is wrong."""
    try:
        return VisionAnswer.model_validate(json.loads(text) if isinstance(text, str) else text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at character {exc.pos})") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"JSON that is not an assessment ({problems})") from None


@timed("vision")
def run_vision(state: AssessState, runtime: Runtime[AgentContext]) -> dict:
    context = runtime.context
    context.require(NAME, "vision")
    if not state.get("images"):
        raise AgentError("an assessment needs at least one image")
    photos, claim = photos_of(state), claim_of(state)
    feedback = None
    invalid = []
    for _ in range(ATTEMPTS):
        text = context.vision.assess(photos, claim, feedback)
        try:
            answer = parse_answer(text)
        except ValueError as exc:
            feedback = str(exc)
            invalid.append(str(text)[:200])
            continue
        return {
            "vision": answer,
            "models": {"vision": context.vision.name},
            "errors": [f"invalid vision answer, repaired: {feedback}"] if invalid else [],
        }
    raise AgentError(
        f"the vision model {context.vision.name!r} returned an invalid assessment {ATTEMPTS} "
        f"times: {feedback} (last answer starts {invalid[-1]!r})"
    )


@timed("assemble")
def assemble(state: AssessState, runtime: Runtime[AgentContext]) -> dict:
    answer = state["vision"]
    timings = {**state.get("timings", {})}
    assessment = Assessment(
        approach="finetuned",
        damages=answer.damages,
        overall_severity=answer.overall_severity,
        cost_estimate=answer.cost_estimate,
        repair_recommendations=answer.repair_recommendations,
        fraud=FRAUD_NOT_ASSESSED.model_copy(deep=True),  # its own copy: callers may edit it
        report=answer.report,
        timings_ms={k: v["ms"] for k, v in timings.items()} | {"total": total_ms(timings)},
        models=state.get("models", {}),
    )
    return {"assessment": assessment}


def build(checkpointer: Any = None) -> Any:
    builder = StateGraph(AssessState, context_schema=AgentContext)
    builder.add_node("vision", run_vision)
    builder.add_node("assemble", assemble)
    builder.add_edge(START, "vision")
    builder.add_edge("vision", "assemble")
    builder.add_edge("assemble", END)
    compiled = builder.compile(checkpointer=checkpointer, name=NAME)
    return compiled.with_config(recursion_limit=RECURSION_LIMIT)


graph = build()
