from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ingest.coco import CocoError, read_coco


def test_demo_coco_validates(demo_corpus):
    root = demo_corpus.root / "damage"
    report = read_coco(root / "annotations" / "train.json", root / "images")
    assert report.problems == []
    assert len(report.examples) == demo_corpus.counts["damage"]["images"]["train"]
    example = report.examples[0]
    assert example.path.is_file() and example.damages and example.severity


def test_each_problem_is_reported_and_skipped(demo_corpus, tmp_path):
    root = demo_corpus.root / "damage"
    data = json.loads((root / "annotations" / "val.json").read_text())
    anns, images = data["annotations"], data["images"]
    touched = {i["id"] for i in images[:3]}
    free = [a for a in anns if a["image_id"] not in touched]  # annotations of intact images
    free[0]["image_id"] = 99999
    free[1]["category_id"] = 42
    free[2]["bbox"] = [300, 200, 50, 50]
    anns.append(dict(free[3]))
    images.append(dict(images[0]))
    images[1]["file_name"] = "missing.jpg"
    images[2]["file_name"] = "not-an-image.jpg"
    images.append({**images[3], "id": 77777, "file_name": str(tmp_path / "elsewhere.jpg")})
    images.append({**images[3], "id": 77778, "file_name": "../../etc/passwd"})
    folder = tmp_path / "images"  # the demo's images, and one that is not an image
    shutil.copytree(root / "images", folder)
    (folder / "not-an-image.jpg").write_text("hello")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    report = read_coco(path, folder)
    reasons = [p["reason"] for p in report.problems]
    assert any("image_id 99999" in r for r in reasons)
    assert any("category_id 42" in r for r in reasons)
    assert any("leaves the 320x240 image" in r for r in reasons)
    assert "duplicate annotation id" in reasons and "duplicate image id" in reasons
    assert any("missing.jpg does not exist" in r for r in reasons)
    assert any("not a readable image" in r for r in reasons)
    # a name that leads out of the image folder is refused unread (a job's data cannot point
    # at the server's files)
    outside = [r for r in reasons if "leads outside the image folder" in r]
    assert len(outside) == 2
    kept = {e.image_id for e in report.examples}
    assert not kept & {images[0]["id"], images[1]["id"], images[2]["id"], 77777, 77778}
    assert len(report.examples) == len(images) - 1 - 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid UTF-8 JSON"),
        ('{"images": []}', "needs 'images', 'annotations' and 'categories'"),
        (
            '{"images": [], "annotations": [], "categories": [{"id": 1, "name": "bird"}]}',
            "'bird' is not a damage type",
        ),
    ],
)
def test_unusable_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "coco.json"
    path.write_text(content)
    with pytest.raises(CocoError, match=message):
        read_coco(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"images": [], "annotations": [], "categories": ["dent"]},
            r"categories\[0\] is not an object",
        ),
        ({"images": [1], "annotations": [], "categories": []}, r"images\[0\] is not an object"),
        (
            {"images": [], "annotations": [], "categories": [{"name": "dent"}]},
            r"categories\[0\] has no 'id'",
        ),
    ],
)
def test_malformed_lists_are_clear_errors(tmp_path, data, message):
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CocoError, match=message):
        read_coco(path)


def test_a_directory_is_not_an_annotation_file(tmp_path):
    with pytest.raises(CocoError, match="no such file"):
        read_coco(tmp_path)


def test_example_paths_are_absolute(demo_corpus, monkeypatch):
    monkeypatch.chdir(demo_corpus.root)
    report = read_coco(Path("damage/annotations/val.json"), Path("damage/images"))
    assert report.examples[0].path.is_absolute()
