from __future__ import annotations

import json

import pytest

from finetune.datasets import DatasetError
from finetune.evaluation import (
    Generated,
    evaluate_text,
    generate,
    markdown_table,
    prompt_messages,
    score,
)
from finetune.metrics import known_numbers, latency_stats, rouge_l, spec_exact_match, values
from ingest.records import ManualBlock, QAPair

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
    assert "| base | 1.000 | 0.500 | 0.667 | 0.250 | - | 0.000 | 200 |" in table


def test_abstention_on_unanswerable_and_answerable_questions():
    questions = [
        *QUESTIONS[:2],
        QAPair("u1", "", "SPEC", "test", "What is the sunroof motor torque?", "", False),
        QAPair("u2", "", "TROUBLESHOOTING", "test", "What does P0999 mean?", "", False),
    ]
    answers = [
        Generated("It is 120 Nm.", True, 1.0),
        Generated("The manual does not cover the coolant capacity.", True, 1.0),  # false
        Generated("The manual does not cover the sunroof motor torque.", True, 1.0),
        Generated("P0999 means 40 Nm.", True, 1.0),  # answers instead of abstaining
    ]
    result = score(questions, answers, known_numbers(["Wheel bolt torque: 120 Nm"]))
    assert result["abstention_rate"] == 0.5 and result["unanswerable"] == 2
    assert result["false_abstention_rate"] == 0.5
    # the refusal scores 0 on its answerable question; unanswerable ones are not in per_kind
    assert result["per_kind"] == {
        "SPEC": {"n": 2, "spec_exact_match": 0.5, "stopped_with_eos": 1.0}
    }
    assert result["hallucinated_number_rate"] == 0.5  # 40 of 120 and 40 (a code is no number)
    assert "| 0.500 | 0.500 |" in markdown_table({"finetuned": result})


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


@pytest.mark.real_model
def test_evaluate_text_scores_each_variant_and_writes_the_report(model_store, tmp_path):
    import json

    from peft import LoraConfig, get_peft_model

    from finetune.artifact import Manifest
    from finetune.model_store import ModelStore, ModelStoreConfig
    from tests.finetune.test_text_lora import RecordingBar, save_tiny_model, tiny_model

    _, tokenizer = model_store.load_causal_lm("smollm2-135m-instruct")
    store = ModelStore(ModelStoreConfig(tmp_path / "models", tmp_path / "adapters", device="cpu"))
    base = save_tiny_model(tokenizer, tmp_path / "tiny")
    adapter = tmp_path / "adapters" / "tiny-lora"
    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(tiny_model(tokenizer), lora).save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    Manifest("text-lora", str(base)).write(adapter)
    questions, blocks = tmp_path / "qa.jsonl", tmp_path / "blocks.jsonl"
    questions.write_text("".join(json.dumps(q.to_dict()) + "\n" for q in QUESTIONS))
    block = ManualBlock("b1", "m.pdf", 1, (), "SPEC", "Wheel bolt torque: 120 Nm")
    blocks.write_text(json.dumps(block.to_dict()) + "\n")
    searched, bars, lines = [], [], []

    def search(question: str) -> list[str]:
        searched.append(question)
        return [block.text]

    common = {"questions": questions, "blocks": blocks, "max_new_tokens": 2, "batch_size": 2}
    results = evaluate_text(
        store,
        "tiny-lora",
        base_model="no-such-model",  # the adapter's manifest names its base
        report_dir=tmp_path / "report",
        kinds=("SPEC",),
        search=search,
        progress=lambda **kwargs: RecordingBar(bars, **kwargs),
        log=lines.append,
        **common,
    )
    assert list(results) == [
        "base",
        "base + retrieval",
        "finetuned (tiny-lora)",
        "finetuned (tiny-lora) + retrieval",
    ]
    assert all(r["n"] == 2 and list(r["per_kind"]) == ["SPEC"] for r in results.values())
    assert searched == [q.question for q in QUESTIONS[:2]] and lines == []
    assert [(b.kwargs["desc"], b.kwargs["total"], b.n) for b in bars] == [
        (label, 2, 2) for label in results
    ]
    assert json.loads((tmp_path / "report" / "report.json").read_text()) == results
    report = (tmp_path / "report" / "report.md").read_text()
    assert (
        report.startswith("# Text evaluation (2 questions)")
        and "| finetuned (tiny-lora) |" in report
    )

    # without the adapter: the base model alone, and a line that says so
    without = {"base_model": str(base), "report_dir": tmp_path / "r2", **common}
    alone = evaluate_text(store, "missing", limit=1, log=lines.append, **without)
    assert list(alone) == ["base"] and alone["base"]["n"] == 1
    assert lines == [
        f"no adapter 'missing' in {tmp_path / 'adapters'}: evaluating the base model only"
    ]
    with pytest.raises(DatasetError, match=r"no WIRING question in .*qa\.jsonl"):
        evaluate_text(store, "missing", kinds=("WIRING",), **without)
    blocks.write_text('{"id": "b1"}\n')
    with pytest.raises(DatasetError, match="cannot read the questions or blocks"):
        evaluate_text(store, "missing", **without)


def test_the_retrieval_gate_refuses_without_asking_the_model(tmp_path):
    from finetune.model_store import ModelStore, ModelStoreConfig

    store = ModelStore(ModelStoreConfig(tmp_path / "models", tmp_path / "adapters", device="cpu"))
    questions = tmp_path / "qa.jsonl"
    unanswerable = QAPair("u", "", "SPEC", "test", "Sunroof motor torque?", "", False)
    items = [QUESTIONS[0], unanswerable]
    questions.write_text("".join(json.dumps(q.to_dict()) + "\n" for q in items))
    asked = []

    def answerer(conversations, adapter, max_new_tokens, progress):
        asked.append([c[-1]["content"] for c in conversations])
        progress(len(conversations))
        return [Generated("120 Nm", True, 50.0) for _ in conversations]

    results = evaluate_text(
        store,
        "missing",
        base_model="unused",
        questions=questions,
        blocks=["Wheel bolt torque: 120 Nm"],
        report_dir=tmp_path / "r",
        search=lambda q: ["Wheel bolt torque: 120 Nm"],
        supported=lambda question, passages: "Sunroof" not in question,
        answerer=answerer,
    )
    closed, gated = results["base"], results["base + retrieval"]
    assert closed["abstention_rate"] == 0.0 and closed["spec_exact_match"] == 1.0
    # with retrieval the sunroof question never reached the model and got the refusal
    assert len(asked[1]) == 1 and "wheel bolt" in asked[1][0]
    assert gated["abstention_rate"] == 1.0 and gated["false_abstention_rate"] == 0.0
    assert gated["refused_by_retrieval"] == 1 and gated["latency_ms"]["p50"] == 50.0
