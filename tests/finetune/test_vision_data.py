from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from finetune.vision_data import (
    DamageLabels,
    assessment_target,
    conversation,
    crop_boxes,
    image_tensor,
)
from finetune.vision_datasets import (
    VisionData,
    VisionDataArgs,
    VisionDataError,
    damage_data,
    training_data,
)
from ingest.assessment import Assessment
from ingest.classification import LabeledImage, write_classification_jsonl
from ingest.coco import DamageAnnotation, DamageExample

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
    # no recorded cost: no estimate to learn (never a price table's figure)
    assert answer["cost_estimate"] == {"min": 0, "max": 0}
    priced = assessment_target(replace(EXAMPLE, cost=1234.0))
    assert priced["cost_estimate"] == {"min": 930, "max": 1540}  # the recorded cost +-25 %
    assert [r["action"] for r in answer["repair_recommendations"]] == [
        "repair",
        "replace",
        "replace",
    ]
    Assessment.model_validate(
        {**answer, "approach": "finetuned", "fraud": {"risk": 0.0, "level": "low"}}
    )


def test_vision_data_describes_its_counts_and_the_first_items_left_out():
    rejected = [{"image": f"{i}.png", "reason": "cannot be read"} for i in range(12)]
    data = VisionData([(None, "a")] * 3, [(None, "b")], rejected, "h")
    lines = data.describe(rejected_lines=10)
    assert lines[0] == "data: 3 train / 1 val images, 12 rejected"
    assert lines[1:] == [f"  rejected {item}" for item in rejected[:10]]
    assert data.describe() == [lines[0]]


def test_data_settings_that_lead_to_no_images_name_the_setting(tmp_path):
    with pytest.raises(VisionDataError, match=r"task=damage reads data\.source=demo or coco"):
        damage_data(VisionDataArgs(source="jsonl"), tmp_path)
    with pytest.raises(VisionDataError, match=r"needs data\.train_file"):
        damage_data(VisionDataArgs(source="coco"), tmp_path)
    with pytest.raises(VisionDataError, match="tunegraph demo"):
        damage_data(VisionDataArgs(), tmp_path)  # no demo corpus there
    with pytest.raises(VisionDataError, match=r"needs data\.folder"):
        training_data("classify", VisionDataArgs(source="folders"), tmp_path)
    with pytest.raises(VisionDataError, match=r"needs --train TRAIN\.jsonl"):
        training_data("classify", VisionDataArgs(source="jsonl"), tmp_path)
    with pytest.raises(VisionDataError, match="jsonl or folders"):
        training_data("classify", VisionDataArgs(source="coco"), tmp_path)


def test_classification_data_decodes_both_splits_and_hashes_the_training_images(tmp_path):
    images = []
    for i, color in enumerate(["red", "blue"] * 3):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), color).save(path)
        images.append(LabeledImage(str(path), color, f"line {i}"))
    write_classification_jsonl(images[:4], tmp_path / "train.jsonl", ["blue", "red"])
    write_classification_jsonl(images[4:], tmp_path / "val.jsonl", ["blue", "red"])
    args = VisionDataArgs(
        source="jsonl", train_file=tmp_path / "train.jsonl", val_file=tmp_path / "val.jsonl"
    )
    data = training_data("classify", args, tmp_path)
    assert [label for _, label in data.train] == ["red", "blue", "red", "blue"]
    assert [label for _, label in data.val] == ["red", "blue"]
    assert data.rejected == [] and data.train[0][0].size == (8, 8)
    assert data.data_hash == training_data("classify", args, tmp_path).data_hash
    args.train_file = tmp_path / "val.jsonl"
    assert training_data("classify", args, tmp_path).data_hash != data.data_hash
