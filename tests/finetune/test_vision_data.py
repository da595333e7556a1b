from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

from finetune.vision_data import (
    DamageLabels,
    assessment_target,
    conversation,
    crop_boxes,
    image_tensor,
)
from ingest.assessment import Assessment
from ingest.coco import DamageAnnotation, DamageExample
from ingest.taxonomy import repair_cost

EXAMPLE = DamageExample(
    image_id=1,
    path=Path("img/1.jpg"),
    width=200,
    height=100,
    damages=(
        DamageAnnotation("dent", (20.0, 10.0, 40.0, 20.0), "hood", "minor"),
        DamageAnnotation("dent", (100.0, 50.0, 20.0, 20.0), "hood", "severe"),
        DamageAnnotation("crack", (0.0, 0.0, 10.0, 10.0), "headlamp", "moderate"),
    ),
    cost=None,
)


def test_detection_targets_merge_a_pairs_boxes_and_keep_its_worst_severity():
    labels = DamageLabels()
    targets = labels.targets(EXAMPLE)
    hood = labels.pairs.index(("hood", "dent"))
    lamp = labels.pairs.index(("headlamp", "crack"))
    assert sum(targets["presence"]) == 2 and targets["presence"][hood] == 1.0
    assert targets["severity"][hood] == 2 and targets["severity"][lamp] == 1
    assert targets["boxes"][hood] == [0.1, 0.1, 0.5, 0.6]  # union, as image fractions
    assert all(s == -100 for i, s in enumerate(targets["severity"]) if i not in (hood, lamp))


def test_crops_move_and_clip_boxes_and_images_become_normalised_tensors():
    assert crop_boxes([[0.5, 0.5, 0.5, 0.5]], (0.5, 0.5, 0.5, 0.5)) == [[0.0, 0.0, 1.0, 1.0]]
    assert crop_boxes([[0.0, 0.0, 0.2, 0.2]], (0.1, 0.1, 0.9, 0.9))[0][:2] == [0.0, 0.0]
    tensor, crop = image_tensor(Image.new("RGB", (64, 48), (255, 0, 0)), (32, 24))
    assert tuple(tensor.shape) == (3, 24, 32) and crop == (0.0, 0.0, 1.0, 1.0)
    assert tensor[0].mean() > 1.9 and tensor[1].mean() < -1.9  # (1 - 0.5) / 0.25, (0 - 0.5) / 0.25
    _, crop = image_tensor(Image.new("RGB", (64, 48)), (32, 24), random.Random(0))
    assert 0.88 <= crop[2] <= 1.0 and crop[0] + crop[2] <= 1.0


def test_the_conversation_answer_is_valid_assessment_json():
    record = conversation(EXAMPLE)
    user, assistant = record["messages"]
    assert user["content"][0]["image_url"]["url"] == "img/1.jpg"
    answer = json.loads(assistant["content"])
    assert answer == assessment_target(EXAMPLE)
    assert answer["overall_severity"] == "severe"
    cost = sum(repair_cost(d.part, d.type, d.severity) for d in EXAMPLE.damages)
    assert answer["cost_estimate"]["min"] <= cost <= answer["cost_estimate"]["max"]
    assert [r["action"] for r in answer["repair_recommendations"]] == [
        "repair",
        "replace",
        "replace",
    ]
    Assessment.model_validate(
        {**answer, "approach": "finetuned", "fraud": {"risk": 0.0, "level": "low"}}
    )
