from __future__ import annotations

import io
import json
import threading

import pytest

from api.server.assessing import VISION_MISSING
from ingest.assessment import Assessment
from tests.agents.conftest import DAMAGE, INCIDENT, PHOTOS, VIN
from tests.agents.fakes import FakeDamageModel, FakeVision, fake_llm
from tests.api.conftest import jpeg, report

CLAIM = {"policy_id": "POL-1", "vin": VIN, "incident_date": INCIDENT.isoformat(),
         "description": "Hood dent in a car park", "claimed_amount": 900}  # fmt: skip
VISION_ANSWER = {
    "damages": [{"type": "dent", "part": "hood", "severity": "moderate"}],
    "overall_severity": "moderate",
    "cost_estimate": {"min": 700, "max": 900},
    "repair_recommendations": [{"part": "hood", "action": "repair"}],
    "report": "Hood dent; repair.",
}


def assess(client, images=None, **fields):
    files = [(io.BytesIO(data), name) for name, data in (images or [("hood.jpg", jpeg())])]
    return client.post(
        "/v1/assessments",
        data={"images": files, **fields},
        content_type="multipart/form-data",
    )


def test_agentic_returns_an_assessment_with_timings(client, context):
    context.llm = fake_llm(report())
    response = assess(client, approach="agentic", claim=json.dumps(CLAIM))
    assert response.status_code == 200
    body = response.get_json()
    assert body["approach"] == "agentic" and body["object"] == "assessment"
    assessment = Assessment.model_validate(body["assessments"]["agentic"])
    assert [(d.type, d.part) for d in assessment.damages] == [("dent", "hood")]
    assert assessment.models["report"] == "fake-llm+ft"
    assert body["errors"] == {} and body["agreement"] is None
    assert set(body["timings_ms"]) == {"agentic", "total"}
    assert body["timings_ms"]["total"] >= body["timings_ms"]["agentic"] > 0
    # the claim reached the graph: its VIN's earlier claim is evidence
    assert "C-1" in {e.id for e in assessment.evidence}


def test_finetuned_without_a_vision_model_is_a_clear_503(client):
    response = assess(client, approach="finetuned")
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["message"] == VISION_MISSING
    assert "tunegraph finetune vision --config configs/vision/vlm_quick.yaml" in error["message"]
    assert error["code"] == "model_not_trained"


def test_both_without_a_vision_model_still_returns_the_agentic_result(client, context):
    context.llm = fake_llm(report())
    response = assess(client)  # approach defaults to both
    assert response.status_code == 200
    body = response.get_json()
    assert body["approach"] == "both"
    assert list(body["assessments"]) == ["agentic"]
    assert body["errors"]["finetuned"]["code"] == "model_not_trained"
    assert body["errors"]["finetuned"]["type"] == "service_unavailable_error"
    assert body["agreement"] is None


class MeetingVision(FakeVision):
    """A vision model that only answers once the damage model is running too."""

    def __init__(self, answers, barrier):
        super().__init__(answers)
        self.barrier = barrier

    def assess(self, images, claim, feedback=None):
        self.barrier.wait()
        return super().assess(images, claim, feedback)


class MeetingDamageModel(FakeDamageModel):
    def __init__(self, damages, barrier):
        super().__init__(damages)
        self.barrier = barrier

    def detect(self, images):
        self.barrier.wait()
        return super().detect(images)


def test_both_run_side_by_side_and_are_compared(client, context):
    # Each approach's first model call waits for the other's: run one after the other, they
    # would break the barrier after 5 s and both fail.
    barrier = threading.Barrier(2, timeout=5)
    context.llm = fake_llm(report())
    context.vision = MeetingVision([json.dumps(VISION_ANSWER)], barrier)
    context.damage_model = MeetingDamageModel([DAMAGE], barrier)
    response = assess(client, images=[("a.png", PHOTOS["p/own.png"]), ("b.jpg", jpeg(3))])
    assert response.status_code == 200
    body = response.get_json()
    assert set(body["assessments"]) == {"finetuned", "agentic"}
    assert body["assessments"]["finetuned"]["models"] == {"vision": "fake-vlm@1"}
    agreement = body["agreement"]
    assert agreement["damage_types"]["jaccard"] == 1.0
    assert agreement["damaged_parts"]["shared"] == ["hood"]
    assert agreement["overall_severity"] == {
        "finetuned": "moderate", "agentic": "moderate", "equal": True
    }  # fmt: skip
    # the agentic fraud check finds a.png among an earlier claim's photos; the VLM cannot
    assert agreement["fraud_level"] == {"finetuned": "low", "agentic": "high", "equal": False}
    assert agreement["cost_estimate"]["finetuned"] == [700, 900]
    assert agreement["cost_estimate"]["overlap"] is True
    assert (agreement["agreed"], agreement["checked"]) == (5, 6)  # all but the fraud level
    assert set(body["timings_ms"]) == {"finetuned", "agentic", "total"}


def test_a_failing_approach_is_reported_beside_the_other(client, context):
    context.llm = fake_llm("not json", "still not json")
    context.vision = FakeVision([json.dumps(VISION_ANSWER)])
    body = assess(client).get_json()
    assert list(body["assessments"]) == ["finetuned"]
    error = body["errors"]["agentic"]
    assert error["code"] == "generation_failed"
    assert "report model returned invalid output 2 times" in error["message"]


@pytest.mark.parametrize(
    ("images", "status", "code", "message"),
    [
        ([("notes.txt", b"hello, not a photo")], 400, "invalid_image", "notes.txt: not a JPEG"),
        # cut inside the header: load_image itself refuses it
        ([("cut.jpg", jpeg(size=(320, 240))[:400])], 400, "invalid_image", "cut.jpg: not a JPEG"),
        ([("tail.jpg", jpeg(size=(320, 240))[:-200])], 400, "invalid_image", "corrupt or cut off"),
        ([(f"{i}.jpg", jpeg(i)) for i in range(9)], 400, "too_many_images", "at most 8"),
        ([("hood.gif", b"GIF89a" + b"\0" * 64)], 400, "invalid_image", "hood.gif"),
    ],
)
def test_bad_uploads_are_refused(client, context, images, status, code, message):
    response = assess(client, images=images)
    assert response.status_code == status
    error = response.get_json()["error"]
    assert (error["code"], error["param"]) == (code, "images")
    assert message in error["message"]
    assert context.damage_model.calls == 0


def test_no_image_an_unknown_approach_and_a_bad_claim_are_400(client):
    response = client.post(
        "/v1/assessments", data={"approach": "agentic"}, content_type="multipart/form-data"
    )
    assert response.get_json()["error"]["code"] == "missing_images"
    response = assess(client, approach="magic")
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "approach"
    assert "finetuned, agentic, both" in response.get_json()["error"]["message"]
    for claim, expected in [
        ("{vin: 1", "Invalid JSON"),
        (json.dumps({"claimed_amount": -5}), "claimed_amount"),
        (json.dumps({"color": "red"}), "color"),
    ]:
        response = assess(client, claim=claim)
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert (error["param"], error["code"]) == ("claim", "invalid_claim")
        assert expected in error["message"]
    response = client.post("/v1/assessments", json={"images": []})
    assert response.get_json()["error"]["code"] == "invalid_content_type"


def test_size_and_pixel_limits(make_app):
    client = make_app(max_image_bytes=2_000).test_client()
    big = jpeg(size=(800, 600)) + b"\0" * 3_000
    response = assess(client, images=[("big.jpg", big)])
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "image_too_large"

    client = make_app(max_image_pixels=1_000).test_client()
    response = assess(client, images=[("wide.jpg", jpeg(size=(100, 50)))])
    assert response.status_code == 400
    assert "5,000 pixels, above the limit of 1,000" in response.get_json()["error"]["message"]

    client = make_app(max_request_bytes=5_000).test_client()
    response = assess(client, images=[("a.jpg", jpeg() + b"\0" * 6_000)])
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "request_too_large"


def test_a_50_mb_upload_is_refused_and_the_app_goes_on(client, context):
    """Default limits: 50 MB fits the request limit (8 x 10 MiB + 16 MiB) but not one image."""
    huge = jpeg() + b"\0" * 50_000_000
    response = assess(client, images=[("huge.jpg", huge)], approach="agentic")
    assert response.status_code == 413
    error = response.get_json()["error"]
    assert error["code"] == "image_too_large" and "huge.jpg" in error["message"]
    context.llm = fake_llm(report())
    assert assess(client, approach="agentic").status_code == 200


def test_the_largest_valid_upload_fits_the_default_request_limit(make_app, context):
    # max_request_bytes left at its default: derived from max_images x max_image_bytes
    client = make_app(max_image_bytes=300_000).test_client()
    context.llm = fake_llm(report())
    photo = jpeg(size=(320, 240))
    largest = photo + b"\0" * (300_000 - len(photo))  # padding after the JPEG's end marker
    response = assess(client, images=[(f"{i}.jpg", largest) for i in range(8)], approach="agentic")
    assert response.status_code == 200, response.get_json()
