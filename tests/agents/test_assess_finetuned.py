from __future__ import annotations

import json

import pytest

from agents.context import AgentContext
from agents.errors import AgentError
from agents.graphs import assess_finetuned
from ingest.assessment import Assessment
from tests.agents.conftest import PHOTOS, photo
from tests.agents.fakes import FakeVision, SeeingVLM

ANSWER = {
    "damages": [{"type": "crack", "part": "windshield", "severity": "moderate"}],
    "overall_severity": "moderate",
    "cost_estimate": {"min": 380, "max": 560},
    "repair_recommendations": [{"part": "windshield", "action": "replace"}],
    "report": "Cracked windshield; replace.",
}


def run(vision, claim=None):
    state = {"images": [PHOTOS["p/own.png"]], "claim": claim}
    return assess_finetuned.graph.invoke(state, context=AgentContext(vision=vision))


def test_one_vision_call_becomes_an_assessment():
    vision = FakeVision([json.dumps(ANSWER)])
    state = run(vision, claim={"vin": "1HGCM82633A004352", "claimed_amount": 500})
    assessment = state["assessment"]
    assert isinstance(assessment, Assessment) and assessment.approach == "finetuned"
    assert assessment.damages[0].part == "windshield"
    assert assessment.cost_estimate.max == 560
    assert assessment.fraud.level == "low" and assessment.fraud.signals == []
    assert assessment.models == {"vision": "fake-vlm@1"}
    assert set(assessment.timings_ms) == {"vision", "total"}
    assert vision.feedback == [None]


def test_an_invalid_answer_is_sent_back_with_the_reason_once():
    bad = {**ANSWER, "overall_severity": "catastrophic"}
    vision = FakeVision([json.dumps(bad), json.dumps(ANSWER)])
    state = run(vision)
    assert state["assessment"].damages[0].type == "crack"
    assert "overall_severity" in vision.feedback[1]
    assert state["errors"] == [f"invalid vision answer, repaired: {vision.feedback[1]}"]


def test_the_photos_are_decoded_once_though_the_model_is_asked_twice(decodes):
    from finetune.vision_lm.assessor import VisionLMAssessor

    reversed_cost = {**ANSWER, "cost_estimate": {"min": 900, "max": 100}}
    model = SeeingVLM([json.dumps(reversed_cost), json.dumps(ANSWER)])
    images = [PHOTOS["p/own.png"], photo(9)]
    state = assess_finetuned.graph.invoke(
        {"images": images}, context=AgentContext(vision=VisionLMAssessor(model))
    )
    assert state["errors"][0].startswith("invalid vision answer, repaired: JSON that is not")
    assert state["vision"].cost_estimate.max == 560  # the parsed answer, kept as a record
    assert model.sizes == [(256, 192)] * 4  # two photos, two attempts
    assert [decodes[data] for data in images] == [1, 1]


def test_two_invalid_answers_are_a_clear_error():
    vision = FakeVision(["{not json", '{"damages": []}'])
    with pytest.raises(AgentError, match="returned an invalid assessment 2 times"):
        run(vision)
    assert vision.feedback[1].startswith("not JSON")


def test_no_images_is_an_error():
    with pytest.raises(AgentError, match="at least one image"):
        assess_finetuned.graph.invoke({"images": []}, context=AgentContext(vision=FakeVision([])))


class Tripwire:
    """A dependency the fine-tuned approach must never touch (issue 23: one model answers)."""

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attribute: str):
        raise AssertionError(f"the fine-tuned approach touched the {self._name} ({attribute})")

    def __call__(self, *args, **kwargs):
        raise AssertionError(f"the fine-tuned approach called the {self._name}")


def test_the_finetuned_approach_touches_no_detector_retrieval_or_claims_database():
    context = AgentContext(
        vision=FakeVision([json.dumps(ANSWER)]),
        damage_model=Tripwire("damage model"),
        manuals=Tripwire("manual retriever"),
        claims_index=Tripwire("claims retriever"),
        claims_db=Tripwire("claims database"),
        llm=Tripwire("text model"),
        open_photo=Tripwire("claims-history photo reader"),
    )
    state = {"images": [PHOTOS["p/own.png"]], "claim": {"vin": "1HGCM82633A004352"}}
    assessment = assess_finetuned.graph.invoke(state, context=context)["assessment"]
    assert assessment.damages[0].part == "windshield"  # answered, with every tripwire intact
    with pytest.raises(AssertionError, match="touched the damage model"):
        context.damage_model.detect  # noqa: B018 - the wire itself works
