from __future__ import annotations

import json
from collections import Counter

import pytest

from finetune.datasets import (
    DatasetError,
    build_dataset,
    chat_token_counter,
    examples_from_blocks,
    examples_from_qa,
    read_blocks,
    read_sft_jsonl,
    spec_paraphrases,
    write_jsonl,
)
from ingest.records import ManualBlock, QAPair


def _words(item) -> int:
    """A stand-in token count: words of all turns."""
    return sum(len(m["content"].split()) for m in item.messages)


@pytest.fixture(scope="module")
def demo_examples(demo_corpus):
    root = demo_corpus.root / "manual" / "qa"
    pairs = []
    for split in ("train", "val"):
        lines = (root / f"{split}.jsonl").read_text().splitlines()
        pairs += [QAPair(**json.loads(line)) for line in lines]
    return examples_from_qa(pairs)


def test_examples_carry_the_task_prefix_and_three_turns(demo_examples):
    for item in demo_examples:
        roles = [m["role"] for m in item.messages]
        assert roles == ["system", "user", "assistant"]
        assert item.messages[1]["content"].startswith(f"[{item.kind}] ")


def test_split_is_deterministic_by_block_and_near_80_20(demo_examples):
    a = build_dataset(demo_examples, count_tokens=_words, seed=7)
    b = build_dataset(demo_examples, count_tokens=_words, seed=7)
    c = build_dataset(demo_examples, count_tokens=_words, seed=8)
    assert [e.to_json() for e in a.train] == [e.to_json() for e in b.train]
    assert {e.group for e in a.val} != {e.group for e in c.val}
    assert not {e.group for e in a.train} & {e.group for e in a.val}
    groups = {e.group for e in demo_examples}
    assert len({e.group for e in a.val}) == round(0.2 * len(groups))


def test_balancing_brings_the_kind_ratio_to_at_most_2(demo_examples):
    report = build_dataset(demo_examples, count_tokens=_words, max_ratio=2.0)
    before = report.counts_before_balancing
    assert max(before.values()) / min(before.values()) > 2  # the demo is unbalanced (SPEC-heavy)
    after = Counter(e.kind for e in report.train)
    assert max(after.values()) / min(after.values()) <= 2.0
    assert all(after[k] >= before[k] for k in before)
    assert Counter(e.kind for e in report.val) == Counter(report.summary()["val_per_kind"])


def test_validation_can_be_a_seeded_sample(demo_examples):
    full = build_dataset(demo_examples, count_tokens=_words, val_examples=demo_examples)
    a, b = (
        build_dataset(demo_examples, count_tokens=_words, val_examples=demo_examples, max_val=50)
        for _ in range(2)
    )
    assert len(a.val) == 50 and [e.to_json() for e in a.val] == [e.to_json() for e in b.val]
    assert set(e.to_json() for e in a.val) < set(e.to_json() for e in full.val)
    assert len(a.train) == len(full.train)


def test_too_long_examples_are_reported_and_dropped(demo_examples):
    report = build_dataset(demo_examples, count_tokens=_words, max_length=60)
    assert report.too_long and all(d["tokens"] > 60 for d in report.too_long)
    assert all(_words(e) <= 60 for e in report.train + report.val)
    kinds = {d["kind"] for d in report.too_long}
    assert "PROCEDURE" in kinds and "SPEC" not in kinds


def test_examples_from_blocks_without_qa():
    blocks = [
        ManualBlock(
            "b1", "m", 1, ("Brakes", "Specifications"), "SPEC", "Wheel bolt torque: 120 Nm"
        ),
        ManualBlock(
            "b2", "m", 2, ("Brakes",), "PROCEDURE", "Pads - replacement\n1. Lift.\n2. Swap."
        ),
        ManualBlock("b3", "m", 2, ("Brakes",), "EXPLANATION", "Booster - description\nIt helps."),
    ]
    items = examples_from_blocks(blocks)
    assert [(e.kind, e.messages[1]["content"], e.messages[2]["content"]) for e in items] == [
        ("SPEC", "[SPEC] What is the wheel bolt torque?", "120 Nm"),
        (
            "PROCEDURE",
            "[PROCEDURE] What is the procedure for: Pads - replacement?",
            "1. Lift.\n2. Swap.",
        ),
        ("EXPLANATION", "[EXPLANATION] Explain: Booster.", "It helps."),
    ]


def test_user_jsonl_reports_bad_lines_by_number(tmp_path):
    good = {
        "messages": [
            {"role": "user", "content": "[SPEC] Torque?"},
            {"role": "assistant", "content": "9 Nm"},
        ]
    }
    plain = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    }
    no_answer = {"messages": [{"role": "user", "content": "Torque?"}]}
    bad_role = {
        "messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]
    }
    path = tmp_path / "sft.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(good),
                "{oops",
                json.dumps(no_answer),
                json.dumps(bad_role),
                "",
                json.dumps(plain),
            ]
        )
    )
    examples, rejected = read_sft_jsonl(path)
    assert [(e.kind, e.messages[-1]["content"]) for e in examples] == [
        ("SPEC", "9 Nm"),
        ("OTHER", "Hello"),
    ]
    assert [(r["line"], r["reason"].split(":")[0]) for r in rejected] == [
        (2, "malformed JSON"),
        (3, "no assistant turn at the end"),
        (4, "message 0 needs a role of assistant, system, user"),
    ]


def test_unusable_user_files_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        read_sft_jsonl(tmp_path / "missing.jsonl")
    path = tmp_path / "empty.jsonl"
    path.write_text("{bad\n")
    with pytest.raises(DatasetError, match="no usable example"):
        read_sft_jsonl(path)


def test_export_is_messages_jsonl_with_a_stable_hash(demo_examples, tmp_path):
    report = build_dataset(demo_examples[:50], count_tokens=_words)
    first = write_jsonl(report.train, tmp_path / "a.jsonl")
    second = write_jsonl(report.train, tmp_path / "b.jsonl")
    assert first == second and len(first) == 64
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert len(lines) == len(report.train)
    assert set(json.loads(lines[0])) == {"messages"}


@pytest.mark.real_model
def test_token_counts_use_the_models_chat_template(model_store, demo_examples):
    _, tokenizer = model_store.load_causal_lm("smollm2-135m-instruct")
    count = chat_token_counter(tokenizer)
    item = demo_examples[0]
    assert count(item) == len(
        tokenizer.apply_chat_template(list(item.messages), tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )
    assert count(item) > _words(item)


def test_given_val_examples_keep_every_block_in_training(demo_corpus):
    root = demo_corpus.root / "manual" / "qa"
    train_pairs, val_pairs = (
        [QAPair(**json.loads(line)) for line in (root / f"{name}.jsonl").read_text().splitlines()]
        for name in ("train", "val")
    )
    report = build_dataset(
        examples_from_qa(train_pairs), val_examples=examples_from_qa(val_pairs), count_tokens=_words
    )
    assert {e.group for e in report.train} == {p.block_id for p in train_pairs}
    assert len(report.val) == len(val_pairs)
    assert not {e.messages[1]["content"] for e in report.train} & {
        e.messages[1]["content"] for e in report.val
    }


def test_spec_paraphrases_ask_each_value_in_distinct_phrasings_after_balancing(demo_corpus):
    root = demo_corpus.root / "manual"
    blocks = read_blocks(root / "blocks.jsonl")
    specs = {b.id: b.text.split(": ", 1)[1] for b in blocks if b.kind == "SPEC"}
    extra = spec_paraphrases(blocks, 4, seed=7)
    assert len(extra) == 4 * len(specs)
    for block_id, value in specs.items():
        asked = [e for e in extra if e.group == block_id]
        questions = {e.messages[1]["content"] for e in asked}
        assert len(questions) == 4 and all(q.startswith("[SPEC] ") for q in questions)
        assert {e.messages[2]["content"] for e in asked} == {value}
    assert spec_paraphrases(blocks, 4, seed=7) == extra  # seeded
    # none of them is a test question, and they join after balancing: the other kinds'
    # upsampling is the same as without them
    test_questions = {
        json.loads(line)["question"]
        for line in (root / "qa" / "test.jsonl").read_text().split("\n")
        if line
    }
    assert not {e.messages[1]["content"][len("[SPEC] ") :] for e in extra} & test_questions
    train = examples_from_qa(
        QAPair(**json.loads(line))
        for line in (root / "qa" / "train.jsonl").read_text().splitlines()
    )
    plain = build_dataset(train, count_tokens=_words, val_examples=[])
    more = build_dataset(train, count_tokens=_words, val_examples=[], extra_train=extra)
    assert more.train[: len(plain.train)] == plain.train
    assert more.added_after_balancing == len(extra) == len(more.train) - len(plain.train)
    assert more.summary()["added_after_balancing"] == len(extra)


def test_spec_paraphrases_and_blocks_files_reject_bad_input(tmp_path):
    block = ManualBlock("b1", "m", 1, (), "SPEC", "Wheel bolt torque: 120 Nm")
    with pytest.raises(DatasetError, match=r"data\.spec_paraphrases=-1: use 0"):
        spec_paraphrases([block], -1)
    questions = [e.messages[1]["content"] for e in spec_paraphrases([block], 25)]
    assert len(questions) == 25 and len(set(questions[:10])) == 10  # all, then round after round
    assert len(set(questions)) == 10
    bad = tmp_path / "blocks.jsonl"
    bad.write_text(json.dumps(block.to_dict()) + '\n{"id": "b2"}\n')
    with pytest.raises(DatasetError, match=r"blocks.jsonl, line 2: not a manual block"):
        read_blocks(bad)
    with pytest.raises(DatasetError, match="no such file"):
        read_blocks(tmp_path / "missing.jsonl")
