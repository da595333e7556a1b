from __future__ import annotations

import json
import os

import pytest

from agents.context import MissingDependencyError
from agents.errors import AgentError
from agents.graphs import assess_agentic
from ingest.assessment import Assessment
from ingest.images import Photo
from tests.agents.conftest import DAMAGE, INCIDENT, PHOTOS, VIN, as_jpeg, photo
from tests.agents.fakes import (
    FakeRetriever,
    ScriptedBackend,
    SeeingClassifier,
    fake_llm,
    report_json,
)

CLAIM = {
    "policy_id": "POL-1",
    "vin": VIN,
    "incident_date": INCIDENT.isoformat(),
    "description": "Hood dent in a car park",
    "claimed_amount": 4000,
}


def run(context, images=None, claim=CLAIM, **config):
    state = {"images": images or [PHOTOS["p/reused.png"]], "claim": claim}
    return assess_agentic.graph.invoke(state, context=context, **config)


def test_a_full_run_returns_a_grounded_assessment(context):
    state = run(context)
    assessment = state["assessment"]
    assert isinstance(assessment, Assessment) and assessment.approach == "agentic"
    assert [(d.type, d.part) for d in assessment.damages] == [("dent", "hood")]
    # Cost: p25-p75 of the three honest hood/dent/moderate claims of other vehicles + C-1.
    assert (assessment.cost_estimate.min, assessment.cost_estimate.max) == (767.5, 825.0)
    assert assessment.repair_recommendations[0].model_dump() == {
        "part": "hood", "action": "repair", "reference": "blk-hood-dent"
    }  # fmt: skip
    signals = " | ".join(assessment.fraud.signals)
    assert "10 days after the policy started" in signals
    assert "earlier claim(s) on this VIN" in signals and "C-1" in signals
    assert "a photo matches claim C-2 of policy POL-2" in signals
    assert "description nearly identical to claim C-2" in signals
    assert "4,000 USD is" in signals
    assert assessment.fraud.level == "high"
    assert assessment.evidence[0].id == "blk-hood-dent"  # cited first
    assert {"C-1", "C-2"} <= {e.id for e in assessment.evidence if e.source == "claims"}
    assert assessment.report.startswith("Dent on the hood")
    nodes = {"damage", "manual", "claims", "cost", "fraud", "report"}
    assert set(assessment.timings_ms) == nodes | {"total"}
    assert set(state["timings"]) == nodes | {"assemble"}  # its own span lands after it
    assert assessment.models == {"damage": "fake-damage@1", "report": "fake-llm+ft"}


def test_the_report_model_is_asked_with_the_tool_results_and_a_schema(context):
    run(context)
    request = context.llm.backend.requests[0]
    assert request.adapter == "ft"
    cited = request.response_schema["properties"]["cited"]["items"]
    assert set(cited["enum"]) >= {"blk-hood-dent", "C-1", "C-2"}
    facts = request.messages[-1]["content"]
    assert "blk-hood-dent" in facts and "policy started" in facts


def test_retrieval_and_claims_branches_overlap_in_time(context):
    context.manuals = FakeRetriever(context.manuals.hits, delay_s=0.3)
    context.claims_index = FakeRetriever(context.claims_index.hits, delay_s=0.3)
    timings = run(context)["timings"]
    manual, claims = timings["manual"], timings["claims"]
    assert manual["start_ms"] < claims["end_ms"] and claims["start_ms"] < manual["end_ms"]
    assert manual["ms"] >= 300 and claims["ms"] >= 300


def test_a_failing_tool_is_reported_and_the_run_goes_on(context):
    context.manuals = FakeRetriever([], error=RuntimeError("index offline"))
    context.llm = fake_llm(report_json(cited=["C-1"]))
    state = run(context)
    assert state["errors"] == ["manual retrieval failed: index offline"]
    assert state["assessment"].repair_recommendations[0].reference == ""
    facts = context.llm.backend.requests[0].messages[-1]["content"]
    assert "index offline" in facts


def test_photos_given_as_bytes_are_decoded_once_for_the_damage_tool_and_the_photo_check(
    context, decodes
):
    from finetune.vision_models import DamageDetector

    seeing = SeeingClassifier(DAMAGE)
    context.damage_model = DamageDetector(seeing)
    images = [as_jpeg(PHOTOS["p/reused.png"]), photo(9)]
    state = run(context, images=images, claim=None)
    assert seeing.sizes == [(256, 192), (256, 192)]
    # the fraud check hashed the uploads too: the first is claim C-2's photo, saved again
    assert "a photo matches claim C-2 of policy POL-2" in state["assessment"].fraud.signals
    assert [decodes[data] for data in images] == [1, 1]
    assert [p.data for p in state["images"]] == images  # what later nodes read


def test_a_run_without_claim_context_has_no_history_signals(context):
    state = run(context, images=[photo(9)], claim=None)
    fraud = state["assessment"].fraud
    assert fraud.signals == [] and fraud.level == "low"


def test_garbage_from_the_report_model_is_repaired_once(context):
    context.llm = fake_llm("this is not JSON", report_json("Repaired report."))
    state = run(context)
    assert state["assessment"].report == "Repaired report."
    second = context.llm.backend.requests[1].messages[-1]["content"]
    assert "Your previous answer was rejected" in second


def test_garbage_twice_is_a_clear_error(context):
    context.llm = fake_llm("nope", json.dumps({"report": 3}))
    with pytest.raises(AgentError, match="report model returned invalid output 2 times"):
        run(context)


def test_a_failing_damage_model_and_missing_dependencies_are_clear_errors(context):
    context.damage_model.error = RuntimeError("CUDA out of memory")
    with pytest.raises(AgentError, match="damage model 'fake-damage@1' failed: CUDA out of memory"):
        run(context)
    context.damage_model = None
    with pytest.raises(MissingDependencyError, match="needs damage_model"):
        run(context)


@pytest.mark.parametrize("backend", ["sqlite", "sqlite-strict", "postgres"])
def test_runs_checkpoint_by_thread_id(context, tmp_path, backend, monkeypatch, caplog):
    from agents.checkpoints import checkpointer

    location = str(tmp_path / "checkpoints.sqlite")
    if backend == "postgres":
        location = os.environ.get("TUNEGRAPH_TEST_POSTGRES_URL", "")
        if not location:
            pytest.skip(
                "no PostgreSQL answered on 127.0.0.1:5432 (database test) and "
                "TUNEGRAPH_TEST_POSTGRES_URL is not set"
            )
    if backend == "sqlite-strict":
        # what LANGGRAPH_STRICT_MSGPACK=true sets up at import: a checkpoint loads only the
        # types that the graph's state names (anything else comes back as a dict)
        from langgraph.checkpoint.base import BaseCheckpointSaver
        from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

        strict = JsonPlusSerializer(allowed_msgpack_modules=None)
        monkeypatch.setattr(BaseCheckpointSaver, "serde", strict)
        monkeypatch.setattr("langgraph._internal._serde.STRICT_MSGPACK_ENABLED", True)
    graph = assess_agentic.build(checkpointer(location))
    config = {"configurable": {"thread_id": f"claim-{tmp_path.name}"}}
    graph.invoke({"images": [PHOTOS["p/own.png"]], "claim": CLAIM}, config, context=context)
    reopened = assess_agentic.build(checkpointer(location))
    saved = reopened.get_state(config).values
    # the records come back as records (a blocked type would come back as its dict)
    assert isinstance(saved["assessment"], Assessment)
    assert saved["assessment"].damages == saved["damages"] and saved["fraud"].level == "high"
    assert saved["images"] == [Photo(PHOTOS["p/own.png"], "image 1")]
    assert "Blocked" not in caplog.text


def test_streaming_the_graph_yields_each_node(context):
    context.llm = type(context.llm)(backend=ScriptedBackend([report_json()]))
    nodes = [
        next(iter(update))
        for update in assess_agentic.graph.stream(
            {"images": [photo(3)], "claim": CLAIM}, context=context, stream_mode="updates"
        )
    ]
    assert nodes[0] == "damage" and set(nodes[1:3]) == {"manual", "claims"}
    assert nodes[-3:] == ["fraud", "report", "assemble"]
