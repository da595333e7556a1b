from __future__ import annotations

import json

import pytest

from finetune.datasets import DatasetError
from finetune.text_data import DataArgs, sft_dataset
from ingest.records import ManualBlock, QAPair


def _words(item) -> int:
    """A stand-in token count: words of all turns."""
    return sum(len(m["content"].split()) for m in item.messages)


def _assemble(data: DataArgs, demo_dir, max_length: int = 512):
    return sft_dataset(data, count_tokens=_words, demo_dir=demo_dir, max_length=max_length, seed=1)


def _chat(question: str, answer: str) -> str:
    return json.dumps(
        {
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        }
    )


def test_user_jsonl_is_split_and_its_bad_lines_reported(tmp_path):
    train = tmp_path / "train.jsonl"
    lines = [_chat(f"[SPEC] Torque {i}?", f"{i} Nm") for i in range(10)]
    train.write_text("\n".join([*lines, "{oops"]))
    report = _assemble(DataArgs(source="jsonl", train_file=train, val_fraction=0.2), tmp_path)
    assert (len(report.train), len(report.val)) == (8, 2)
    assert [r["line"] for r in report.rejected] == [11]
    assert report.summary()["rejected"] == report.rejected
    # a separate validation file is used as it is, and its bad lines are reported too
    val = tmp_path / "val.jsonl"
    val.write_text(_chat("[WIRING] Pin 1?", "red") + "\n[]\n")
    report = _assemble(DataArgs(source="jsonl", train_file=train, val_file=val), tmp_path)
    assert (len(report.train), [e.kind for e in report.val]) == (10, ["WIRING"])
    assert [r["line"] for r in report.rejected] == [11, 2]


def test_demo_data_with_spec_paraphrases_from_the_demos_blocks(tmp_path):
    qa = tmp_path / "demo" / "manual" / "qa"
    qa.mkdir(parents=True)
    for split, question in (("train", "Wheel bolt torque?"), ("val", "Give me the bolt torque.")):
        pair = QAPair(f"{split}1", "b1", "SPEC", split, question, "120 Nm")
        (qa / f"{split}.jsonl").write_text(json.dumps(pair.to_dict()) + "\n")
    block = ManualBlock("b1", "m.pdf", 1, (), "SPEC", "Wheel bolt torque: 120 Nm")
    (qa.parent / "blocks.jsonl").write_text(json.dumps(block.to_dict()) + "\n")
    # data.demo_dir wins over the workspace's demo folder
    data = DataArgs(demo_dir=tmp_path / "demo", spec_paraphrases=3)
    report = _assemble(data, demo_dir=tmp_path / "elsewhere")
    assert (len(report.train), len(report.val), report.added_after_balancing) == (4, 1, 3)
    assert {e.messages[-1]["content"] for e in report.train} == {"120 Nm"}
    # examples longer than max_length are dropped and reported
    assert len(_assemble(data, tmp_path, max_length=3).too_long) == 5


def test_missing_inputs_name_the_field_to_set(tmp_path):
    with pytest.raises(DatasetError, match=r"data\.source=jsonl needs data\.train_file=PATH"):
        _assemble(DataArgs(source="jsonl"), tmp_path)
    train = tmp_path / "train.jsonl"
    train.write_text(_chat("[SPEC] Torque?", "9 Nm") + "\n")
    with pytest.raises(DatasetError, match=r"add data\.blocks_file=PATH"):
        _assemble(DataArgs(source="jsonl", train_file=train, spec_paraphrases=2), tmp_path)
    with pytest.raises(DatasetError, match="run `tunegraph demo` first"):
        _assemble(DataArgs(), tmp_path / "no-demo")
