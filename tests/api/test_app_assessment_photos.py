"""``POST /v1/assessments`` decodes each uploaded photo once: the upload check's decode is the
one that the damage model, the vision-language model and the fraud photo check all read."""

from __future__ import annotations

import io
import json

from finetune.vision_lm.assessor import VisionLMAssessor
from finetune.vision_models import DamageDetector
from tests.agents.conftest import DAMAGE, PHOTOS, as_jpeg, decodes, photo  # noqa: F401
from tests.agents.fakes import SeeingClassifier, SeeingVLM, fake_llm
from tests.api.conftest import report

ANSWER = {
    "damages": [{"type": "dent", "part": "hood", "severity": "moderate"}],
    "overall_severity": "moderate",
    "cost_estimate": {"min": 700, "max": 900},
    "repair_recommendations": [{"part": "hood", "action": "repair"}],
}
# the first is claim C-2's photo saved again as JPEG: the agentic fraud check must hash it
UPLOADS = {"reused.jpg": as_jpeg(PHOTOS["p/reused.png"]), "hood.png": photo(7)}


def test_both_approaches_read_one_decode_of_each_photo(client, context, decodes):  # noqa: F811
    classifier, vlm = SeeingClassifier(DAMAGE), SeeingVLM([json.dumps(ANSWER)])
    context.damage_model = DamageDetector(classifier)
    context.vision = VisionLMAssessor(vlm)
    context.llm = fake_llm(report())
    response = client.post(
        "/v1/assessments",
        data={"images": [(io.BytesIO(data), name) for name, data in UPLOADS.items()]},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["errors"] == {} and set(body["assessments"]) == {"finetuned", "agentic"}
    # every model and the photo check looked at both photos...
    assert classifier.sizes == vlm.sizes == [(256, 192), (256, 192)]
    signals = body["assessments"]["agentic"]["fraud"]["signals"]
    assert "a photo matches claim C-2 of policy POL-2" in signals
    # ...through one decode each
    assert [decodes[data] for data in UPLOADS.values()] == [1, 1]
