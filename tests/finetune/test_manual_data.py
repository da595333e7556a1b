"""Training data from any manual: questions per kind, unanswerable questions, RAFT examples, and
``data.source=manual`` end to end through sft_dataset (blocks parsed from a Markdown manual)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from finetune.datasets import DatasetError, is_refusal
from finetune.manual_data import (
    OTHER_PARTS,
    TEMPLATES,
    facts,
    manual_questions,
    raft_examples,
    template_splits,
    unanswerable_questions,
)
from finetune.text_data import DataArgs, data_files, sft_dataset
from ingest.records import BLOCK_KINDS, ManualBlock

MANUAL = """# Van service manual

## Engine tightening torques

| Item | Value |
| --- | --- |
| Injector clamp bolt | 28 Nm |
| Cylinder head bolt stage 1 | 40 Nm |
| Oil drain plug | 25 Nm |

## Capacities

| Item | Value |
| --- | --- |
| Engine oil with filter | 6.2 L |

## Glow plug replacement

1. Disconnect the battery.
2. Remove the engine cover.
3. Unscrew the glow plugs with a deep socket.

## How the particulate filter regenerates

The engine control module raises the exhaust temperature by late injection until the soot in
the filter burns off.

## Connector X12 - Rail pressure sensor

| Pin | Circuit | Wire colour |
| --- | --- | --- |
| 1 | 5 V reference | red |
| 2 | signal | green |
| 3 | ground | brown |

## P2463 - Particulate filter soot accumulation

Possible causes:
- Short trips only
- Faulty differential pressure sensor
"""


def _blocks(tmp_path):
    from ingest.manuals import parse_manual

    path = tmp_path / "van.md"
    path.write_text(MANUAL)
    return path, parse_manual(path)


def _words(item) -> int:
    return sum(len(m["content"].split()) for m in item.messages)


def test_every_kind_is_asked_and_test_wordings_never_train(tmp_path):
    _, blocks = _blocks(tmp_path)
    assert Counter(b.kind for b in blocks) == {
        "SPEC": 4,
        "PROCEDURE": 1,
        "EXPLANATION": 1,
        "WIRING": 1,
        "TROUBLESHOOTING": 1,
    }
    train, val, test = manual_questions(blocks, phrasings=3, seed=5)
    # one fact per block, one per wiring pin: 4 specs, 3 pins, 3 others
    assert (len(train), len(val), len(test)) == (30, 10, 10)
    assert {q.kind for q in test} == set(BLOCK_KINDS)
    splits = template_splits(5)
    for kind in BLOCK_KINDS:
        assert not set(splits[kind]["test"]) & set(splits[kind]["train"])
        assert sorted(sum(splits[kind].values(), ())) == sorted(TEMPLATES[kind])
    by_value = {q.answer: q for q in test if q.kind == "SPEC"}
    # a torque table's rows are asked as torques (a kind of value the unit tells), the capacity
    # row as a capacity
    clamp = next(f for f in facts(blocks) if f.answer == "28 Nm").fields
    assert clamp == {
        "x": "injector clamp bolt tightening torque",
        "n": "injector clamp bolt",
        "unit": "torque",
    }
    assert "injector clamp bolt" in by_value["28 Nm"].question.lower()
    assert "engine oil with filter" in by_value["6.2 L"].question.lower()
    assert next(f for f in facts(blocks) if f.answer == "6.2 L").fields["unit"] == "volume"
    pins = sorted(q.answer for q in train if q.kind == "WIRING")
    assert "Pin 2 of connector X12: circuit signal, wire colour green." in pins
    trouble = next(q for q in test if q.kind == "TROUBLESHOOTING")
    assert "P2463" in trouble.question and "Short trips only" in trouble.answer
    # the same seed gives the same questions; another seed other wordings
    assert manual_questions(blocks, phrasings=3, seed=5).test == test
    assert manual_questions(blocks, phrasings=3, seed=6).test != test


def test_unanswerable_questions_ask_about_what_the_manual_lacks(tmp_path):
    _, blocks = _blocks(tmp_path)
    text = MANUAL.lower()
    none = unanswerable_questions(blocks, 40, seed=3)
    questions = none.train + none.val + none.test
    assert 40 <= len(questions) <= 41 and none.test and none.val  # whole subjects: about 40
    for q in questions:
        assert not q.answerable and q.block_id == "" and is_refusal(q.answer)
    codes = [q for q in questions if q.kind == "TROUBLESHOOTING"]
    assert codes and all(q.answer.split()[-1].rstrip(".").lower() not in text for q in codes)
    pins = [q for q in questions if q.kind == "WIRING"]
    # connector X12 has pins 1-3: the question asks for one beyond them
    assert all(int(q.answer.split("pin ")[1].split()[0]) > 3 for q in pins)

    # subjects never straddle the split: a test question names no part, code or connector
    # that a training question names
    def subjects(side):
        names = [*OTHER_PARTS, "connector x12", *(q.answer.split()[-1].rstrip(".") for q in codes)]
        return {n for q in side for n in names if n.lower() in q.answer.lower()}

    assert subjects(none.test) and not subjects(none.test) & subjects(none.train)
    assert not subjects(none.val) & subjects(none.train)
    assert unanswerable_questions(blocks, 0).train == []


def _search_over(blocks):
    """A stand-in retriever: blocks by shared words with the question, best first."""

    def search(question, k):
        words = set(question.lower().split())
        ranked = sorted(blocks, key=lambda b: -len(words & set(b.text.lower().split())))
        return [(b.id, b.text) for b in ranked[:k]]

    return search


def test_raft_examples_hold_the_right_passage_or_only_distractors(tmp_path):
    _, blocks = _blocks(tmp_path)
    train, _, _ = manual_questions(blocks, phrasings=4, seed=1)
    by_id = {b.id: b.text for b in blocks}
    raft = raft_examples(
        train, _search_over(blocks), blocks, share=1.0, passages=2, oracle_share=0.5, seed=1
    )
    assert len(raft) == len(train)
    with_oracle = 0
    for item, question in zip(raft, train, strict=True):
        user = item.messages[1]["content"]
        assert user.startswith("Manual excerpts:\n") and user.endswith(question.question)
        passages = (
            user.split("\n\nQuestion:")[0].removeprefix("Manual excerpts:\n").split("\n---\n")
        )
        assert len(passages) == 2
        with_oracle += by_id[question.block_id] in passages
        assert item.messages[2]["content"] == question.answer  # the answer stays the reference
    assert 0.3 < with_oracle / len(raft) < 0.8  # about oracle_share, seeded
    with pytest.raises(DatasetError, match="raft_share"):
        raft_examples(train, _search_over(blocks), blocks, share=1.5)


def test_source_manual_builds_train_val_test_and_a_data_card(tmp_path):
    path, blocks = _blocks(tmp_path)
    data = DataArgs(
        source="manual",
        manual=path,
        phrasings=2,
        unanswerable_share=1.0,
        raft_share=0.5,
        raft_passages=2,
    )
    report = sft_dataset(
        data,
        count_tokens=_words,
        demo_dir=tmp_path / "no-demo",
        max_length=400,
        seed=2,
        passage_index=_search_over,
    )
    card = report.card
    assert card["source"] == "manual" and card["manual"] == str(path)
    assert card["blocks_per_kind"]["SPEC"] == 4 and card["raft"]["examples"] > 0
    assert card["unanswerable"]["test"] >= 1
    assert len(report.test) == card["test_questions"] == 10 + card["unanswerable"]["test"]
    refusals = [e for e in report.train if is_refusal(e.messages[-1]["content"])]
    assert refusals, "unanswerable questions are trained"
    # made-up fault codes and pins are refused only where passages show they are not listed
    unsure = [e for e in refusals if e.kind in ("TROUBLESHOOTING", "WIRING")]
    assert unsure and all(e.messages[1]["content"].startswith("Manual excerpts:") for e in unsure)
    assert any("Manual excerpts" in e.messages[1]["content"] for e in report.train)
    files = data_files(report)
    assert set(files) == {"data/card.json", "data/test.jsonl", "data/blocks.jsonl"}
    kept = [json.loads(line) for line in files["data/test.jsonl"].splitlines()]
    assert {q["answerable"] for q in kept} == {True, False}
    assert len(files["data/blocks.jsonl"].splitlines()) == len(blocks)


def test_bad_manual_input_names_the_file_and_what_was_found(tmp_path):
    def build(**fields):
        return sft_dataset(
            DataArgs(source="manual", **fields),
            count_tokens=_words,
            demo_dir=tmp_path,
            max_length=400,
            seed=1,
        )

    with pytest.raises(DatasetError, match=r"data\.manual=PATH .* or data\.namespace=NAME"):
        build()
    with pytest.raises(DatasetError, match="no such file"):
        build(manual=tmp_path / "missing.md")
    empty = tmp_path / "empty.md"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match=r"empty\.md: no text found"):
        build(manual=empty)
    headings = tmp_path / "headings.md"
    headings.write_text("# Van manual\n\n## Engine\n")
    with pytest.raises(DatasetError, match=r"no manual block found in headings\.md"):
        build(manual=headings)
    prose = tmp_path / "prose.txt"
    prose.write_text("The van is a van.\n\nIt has wheels.\n")
    with pytest.raises(DatasetError, match=r"prose\.txt has 1 block\(s\) but nothing to ask"):
        build(manual=prose)
    with pytest.raises(DatasetError, match="holds no manual blocks"):
        sft_dataset(
            DataArgs(source="manual", namespace="own"),
            count_tokens=_words,
            demo_dir=tmp_path,
            max_length=400,
            seed=1,
            index_blocks=lambda _name: [],
        )
    only_specs = tmp_path / "specs.md"
    only_specs.write_text(
        "## Specifications\n\n| Item | Value |\n|---|---|\n| Wheel nut | 120 Nm |\n"
    )
    lines = []
    report = sft_dataset(
        DataArgs(source="manual", manual=only_specs),
        count_tokens=_words,
        demo_dir=tmp_path,
        max_length=400,
        seed=1,
        log=lines.append,
    )
    assert report.train and "no PROCEDURE/EXPLANATION/WIRING/TROUBLESHOOTING block" in lines[0]
    assert "(found SPEC 1)" in lines[0]


def test_facts_name_spec_rows_that_share_a_name_by_their_table():
    rows = [
        ManualBlock("a", "m", 1, ("Gearbox",), "SPEC", "Drain plug: 30 Nm"),
        ManualBlock("b", "m", 1, ("Axle",), "SPEC", "Drain plug: 45 Nm"),
    ]
    subjects = [f.fields["x"] for f in facts(rows)]
    assert subjects == ["drain plug (gearbox)", "drain plug (axle)"]


def test_a_teacher_writes_training_questions_checked_against_each_block(tmp_path):
    path, blocks = _blocks(tmp_path)
    prompts = []

    def ask(prompt):
        prompts.append(prompt)
        if "Injector clamp bolt" in prompt:
            return "\n".join(
                [
                    '{"question": "injector clamps, what torque?", "answer": "28 Nm"}',
                    '{"question": "clamp bolts on the injectors?", "answer": "about 30 Nm"}',
                    '{"question": "Is it 28 Nm for the clamps?", "answer": "28 Nm"}',
                    "not json",
                ]
            )
        if "Oil drain plug" in prompt:
            return "Sure! Here are some questions."  # nothing usable
        return '{"question": "teacher question", "answer": "see the passage"}'

    from finetune.manual_data import teacher_questions

    written, report = teacher_questions(blocks, ask, per_fact=2, seed=1)
    assert len(prompts) == len(facts(blocks))
    clamp = [q for q in written if q.answer == "28 Nm"]
    # kept: the first; rejected: an invented number (30) and a question that gives 28 Nm away
    assert [q.question for q in clamp] == ["injector clamps, what torque?"]
    whys = {r["why"] for r in report.rejected}
    assert "the answer holds numbers the passage does not: 30" in whys
    assert "the question gives the answer away" in whys
    assert "not a JSON object with question and answer" in whys
    # the drain plug's reply had nothing usable: the templates asked instead
    drain = [q for q in written if q.answer == "25 Nm"]
    assert len(drain) == 2 and report.failed_facts == 1
    assert "pin 2 of connector X12" in next(p for p in prompts if "X12" in p and "pin 2" in p)
    # through sft_dataset: the card says which method wrote the questions
    data = DataArgs(source="manual", manual=path, teacher_url="http://t/v1", teacher_model="big")
    report = sft_dataset(
        data,
        count_tokens=_words,
        demo_dir=tmp_path,
        max_length=400,
        seed=1,
        teacher=lambda url, model: ask,
    )
    assert report.card["phrasing"].startswith("teacher big at http://t/v1")
    assert report.card["teacher"]["facts_on_templates"] == 1

    def down(prompt):
        raise ConnectionError("connection refused")

    for args, teacher, problem in (
        (DataArgs(source="manual", manual=path, teacher_url="http://t/v1"), ask, "teacher_model"),
        (data, down, "the teacher did not answer .connection refused"),
    ):
        with pytest.raises(DatasetError, match=problem):
            sft_dataset(
                args,
                count_tokens=_words,
                demo_dir=tmp_path,
                max_length=400,
                seed=1,
                teacher=lambda url, model, teacher=teacher: teacher,
            )


def test_unanswerable_specs_swap_a_qualifier_only_into_names_the_manual_lacks():
    rows = [
        ManualBlock("f", "m", 1, ("Brakes",), "SPEC", "Front brake disc minimum thickness: 26 mm"),
        ManualBlock("r", "m", 1, ("Brakes",), "SPEC", "Rear brake disc minimum thickness: 14 mm"),
        ManualBlock("s", "m", 1, ("Torques",), "SPEC", "Front strut top nut: 60 Nm"),
    ]
    none = unanswerable_questions(rows, 500, seed=1)
    asked = {q.answer for q in none.train + none.val + none.test if q.kind == "SPEC"}
    assert "The manual does not cover the rear strut top nut." in asked
    assert "The manual does not cover the front brake disc maximum thickness." in asked
    # front <-> rear of the discs gives rows the manual has: never asked as unanswerable
    assert not any("rear brake disc minimum" in a or "front brake disc minimum" in a for a in asked)


def test_no_training_question_is_worded_like_a_held_out_one(tmp_path):
    from finetune.manual_data import wording

    path, _ = _blocks(tmp_path)
    data = DataArgs(
        source="manual", manual=path, spec_paraphrases=12, unanswerable_share=0.5, raft_share=1.0
    )
    report = sft_dataset(
        data, count_tokens=_words, demo_dir=tmp_path, max_length=400, seed=4,
        passage_index=_search_over,
    )  # fmt: skip
    held_out = {wording(q.question) for q in report.test}
    trained = {wording(e.messages[1]["content"]) for e in report.train}
    assert held_out and not held_out & trained
    assert report.card["spec_paraphrases"] == 12  # 12 per row, from the training templates only


def test_the_teacher_may_not_write_a_held_out_question(tmp_path):
    from finetune.manual_data import teacher_questions

    _, blocks = _blocks(tmp_path)
    line = '{"question": "What are the possible causes of P2463?", "answer": "Short trips only"}'
    written, report = teacher_questions(
        blocks,
        lambda prompt: line,
        per_fact=1,
        held_out=["what are the possible causes of P2463"],
    )
    assert "worded like a held-out (val or test) question" in {r["why"] for r in report.rejected}
    assert all(q.question != "What are the possible causes of P2463?" for q in written)


def test_user_jsonl_with_unanswerable_questions_is_still_split(tmp_path):
    path, _ = _blocks(tmp_path)
    blocks_file = tmp_path / "blocks.jsonl"
    from ingest.manuals import parse_manual

    blocks_file.write_text("".join(json.dumps(b.to_dict()) + "\n" for b in parse_manual(path)))
    train = tmp_path / "train.jsonl"
    lines = [
        json.dumps({"messages": [{"role": "user", "content": f"[SPEC] T{i}?"},
                                 {"role": "assistant", "content": f"{i} Nm"}]})
        for i in range(50)
    ]  # fmt: skip
    train.write_text("\n".join(lines))
    data = DataArgs(
        source="jsonl", train_file=train, blocks_file=blocks_file, unanswerable_share=0.2
    )
    report = sft_dataset(data, count_tokens=_words, demo_dir=tmp_path, max_length=400, seed=1)
    answers = [e.messages[-1]["content"] for e in report.val]
    assert sum(not is_refusal(a) for a in answers) >= 8  # the user's own examples, held out


def test_a_pin_table_whose_pin_column_is_not_first():
    table = ManualBlock(
        "w",
        "m",
        1,
        (),
        "WIRING",
        "Connector C5 - Door lock\nCircuit | Pin | Colour\nlock motor | 2 | red",
    )
    (fact,) = facts([table])
    assert fact.fields == {"x": "connector C5", "p": "2"}
    assert fact.answer == "Pin 2 of connector C5: circuit lock motor, colour red."


@pytest.mark.parametrize("name", ["EM-C3", "C101", "X12", "BR-C12A"])
def test_a_connector_is_named_in_full(name):
    table = ManualBlock(
        "w", "m", 1, (), "WIRING", f"Connector {name} - Sensor\nPin | Circuit\n1 | signal"
    )
    (fact,) = facts([table])
    assert fact.fields["x"] == f"connector {name}"
