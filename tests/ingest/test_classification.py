from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from PIL import Image

from ingest.classification import (
    ClassificationError,
    LabeledImage,
    read_class_folders,
    read_classification_jsonl,
    sample_and_split,
    write_classification_jsonl,
)
from ingest.images import image_bytes


def _line(url, label, *, image_type="input_image", text_type="input_text", as_part=True):
    answer = [{"type": "output_text", "text": label}] if as_part else label
    return json.dumps(
        {
            "messages": [
                {"role": "system", "content": "Respond with exactly one of: cat, dog"},
                {
                    "role": "user",
                    "content": [
                        {"type": text_type, "text": "Classify."},
                        {"type": image_type, "image_url": {"url": url}},
                    ],
                },
                {"role": "assistant", "content": answer},
            ]
        }
    )


def test_jsonl_accepts_every_url_and_part_form_and_reports_bad_lines(tmp_path):
    (tmp_path / "img").mkdir()
    png = image_bytes(Image.new("RGB", (4, 4)), "PNG")
    (tmp_path / "img" / "a.png").write_bytes(png)
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    lines = [
        _line("img/a.png", "cat"),
        _line(str(tmp_path / "img" / "a.png"), "dog", image_type="image_url", text_type="text"),
        _line(data_url, "cat", as_part=False),
        _line("file://" + str(tmp_path / "img" / "a.png"), "dog"),
        "{broken",
        _line("https://example.com/x.jpg", "cat"),
        _line("img/missing.png", "cat"),
        json.dumps({"messages": [{"role": "user", "content": "no image"}]}),
        _line("data:image/png;base64,@@@", "cat"),
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    report = read_classification_jsonl(tmp_path / "train.jsonl")
    assert [e.label for e in report.examples] == ["cat", "dog", "cat", "dog"]
    assert all(e.read_bytes() == png for e in report.examples)
    assert report.classes == ["cat", "dog"] and "cat, dog" in report.system_prompt
    reasons = {p["line"]: p["reason"] for p in report.problems}
    assert sorted(reasons) == [5, 6, 7, 8, 9]
    assert reasons[5].startswith("malformed JSON")
    assert "does not download" in reasons[6]
    assert "missing.png does not exist" in reasons[7]
    assert "exactly one input_image" in reasons[8]
    assert "base64 payload is corrupt" in reasons[9]


def test_a_file_with_no_usable_line_is_an_error_naming_it(tmp_path):
    (tmp_path / "bad.jsonl").write_text("{nope\n")
    with pytest.raises(ClassificationError, match=r"bad\.jsonl: no usable example \(1 line"):
        read_classification_jsonl(tmp_path / "bad.jsonl")
    with pytest.raises(ClassificationError, match="no such file"):
        read_classification_jsonl(tmp_path / "none.jsonl")


def test_folders_split_deterministically_and_round_trip_through_jsonl(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (4, 4), (i, 0, 0)).save(tmp_path / "data" / label / f"{i}.png")
    (tmp_path / "data" / "cat" / "notes.txt").write_text("x")
    report = read_class_folders(tmp_path / "data")
    assert len(report.examples) == 20 and report.problems[0]["reason"].startswith("not a")
    train, val, test = sample_and_split(report.examples, per_class=8, fractions=(0.5, 0.25, 0.25))
    assert (len(train), len(val), len(test)) == (8, 4, 4)
    assert not {x.source for x in train} & {x.source for x in test}
    other_seed = sample_and_split(report.examples, per_class=8, seed=7)[0]
    assert {x.source for x in other_seed} != {x.source for x in train}
    write_classification_jsonl(train, tmp_path / "data" / "train.jsonl", report.classes)
    first = json.loads((tmp_path / "data" / "train.jsonl").read_text().splitlines()[0])
    assert first["messages"][1]["content"][1]["image_url"]["url"].count("/") == 1  # relative
    again = read_classification_jsonl(tmp_path / "data" / "train.jsonl")
    assert [(e.label, e.source) for e in again.examples] == [
        (e.label, str((tmp_path / "data").resolve() / e.label / Path(e.source).name)) for e in train
    ]


def test_sampling_keeps_at_least_one_training_image_per_class():
    items = [LabeledImage("x.jpg", "rare", "")]
    train, val, test = sample_and_split(items, fractions=(0.34, 0.33, 0.33))
    assert len(train) == 1 and not val and not test
