from __future__ import annotations

import pytest

from finetune.evaluation import Generated, generate, markdown_table, prompt_messages, score
from finetune.metrics import known_numbers, latency_stats, rouge_l, spec_exact_match, values
from ingest.records import QAPair

QUESTIONS = [
    QAPair("q1", "b1", "SPEC", "test", "What is the wheel bolt torque?", "120 Nm"),
    QAPair("q2", "b2", "SPEC", "test", "What is the coolant capacity?", "5.6 L"),
    QAPair(
        "q3",
        "b3",
        "PROCEDURE",
        "test",
        "How do I replace the pads?",
        "1. Lift the car.\n2. Swap the pads.",
    ),
]


def test_spec_match_normalises_numbers_and_units():
    assert spec_exact_match("Wheel bolts: 120 N·m.", "120 Nm")
    assert spec_exact_match("5.60 l", "5.6 L")
    assert not spec_exact_match("Between 100 Nm and 120 Nm", "120 Nm")  # the first value counts
    assert not spec_exact_match("120 mm", "120 Nm")
    assert values("90 °C") == [(90.0, "degc")]


def test_rouge_l_bounds():
    assert rouge_l("a b c", "a b c") == 1.0
    assert rouge_l("x y", "a b") == 0.0


def test_score_per_kind_eos_and_hallucinations():
    answers = [
        Generated("It is 120 Nm.", True, 100.0),
        Generated("About 7 L.", False, 300.0),
        Generated("1. Lift the car. 2. Swap the pads.", True, 200.0),
    ]
    known = known_numbers(
        ["Wheel bolt torque: 120 Nm", "Coolant capacity: 5.6 L", "1. Lift 2. Swap"]
    )
    result = score(QUESTIONS, answers, known)
    assert result["per_kind"]["SPEC"] == {"n": 2, "spec_exact_match": 0.5, "stopped_with_eos": 0.5}
    assert result["per_kind"]["PROCEDURE"]["rouge_l"] == pytest.approx(1.0)
    assert result["stopped_with_eos"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["hallucinated_number_rate"] == pytest.approx(1 / 4)  # "7" of 120, 7, 1, 2
    assert result["latency_ms"]["p50"] == 200.0 and result["latency_ms"]["max"] == 300.0
    table = markdown_table({"base": result})
    assert "| base | 1.000 | 0.500 | 0.667 | 0.250 | 200 |" in table


def test_latency_stats_match_the_definitions():
    stats = latency_stats([10.0, 20.0, 30.0, 40.0])
    assert stats["mean"] == 25.0 and stats["p50"] == 25.0 and stats["min"] == 10.0
    assert stats["throughput_per_s"] == pytest.approx(40.0)


def test_prompt_puts_context_before_the_prefixed_question():
    messages = prompt_messages(QUESTIONS[0], ["Wheel bolt torque: 120 Nm"])
    assert messages[0]["role"] == "system"
    assert messages[1]["content"].startswith("Manual excerpts:\nWheel bolt torque: 120 Nm")
    assert messages[1]["content"].endswith("Question: [SPEC] What is the wheel bolt torque?")


@pytest.mark.real_model
def test_generate_batches_with_left_padding(model_store):
    from tests.finetune.test_text_lora import tiny_model

    _, tokenizer = model_store.load_causal_lm("smollm2-135m-instruct")
    model = tiny_model(tokenizer)
    conversations = [prompt_messages(q) for q in QUESTIONS]
    batched = generate(model, tokenizer, conversations, max_new_tokens=4, batch_size=2)
    single = generate(model, tokenizer, conversations, max_new_tokens=4, batch_size=1)
    assert len(batched) == 3 and all(isinstance(g.text, str) for g in batched)
    assert [g.text for g in batched] == [g.text for g in single]  # padding changes nothing
