from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from agents.backends.base import Event, Usage
from agents.chat_model import LocalChatModel
from agents.compare.records import ComparisonCancelled, PhotoCase, Prices, Training
from agents.compare.run import run_comparison
from agents.compare.summary import summarize
from agents.context import AgentContext
from finetune.bootstrap import verdict
from ingest.assessment import Damage
from ingest.records import QAPair
from rag.stores.base import Hit
from tests.agents.fakes import FakeRetriever, report_json

MANUAL = [
    Hit("spec-1", "Wheel nut torque: 110 Nm.", 0.9, {"kind": "SPEC"}),
    Hit("proc-1", "Remove the wheel, then the caliper.", 0.8, {"kind": "PROCEDURE"}),
]
QUESTIONS = [
    QAPair("q1", "spec-1", "SPEC", "test", "What is the wheel nut torque?", "110 Nm"),
    QAPair(
        "q2",
        "proc-1",
        "PROCEDURE",
        "test",
        "How do I remove the caliper?",
        "Remove the wheel, then the caliper.",
    ),
    QAPair("q3", "spec-1", "SPEC", "test", "Wheel nut torque again?", "110 Nm"),
]
KNOWN = {"110"}
SEVERE = {"type": "crack", "part": "front_bumper", "severity": "severe"}
MINOR = {"type": "scratch", "part": "front_door", "severity": "minor"}


def photos(n: int = 8) -> list[PhotoCase]:
    cases = []
    for i in range(n):
        damage = SEVERE if i % 2 else MINOR
        cases.append(
            PhotoCase(
                f"p{i}.png", f"image-{i}".encode(), (damage,), damage["severity"], 1000.0 + 100 * i
            )
        )
    return cases


def truth_answer(case: PhotoCase) -> str:
    """What a perfect fine-tuned vision model answers for ``case``."""
    return json.dumps(
        {
            "damages": [{**d, "confidence": 1.0} for d in case.damages],
            "overall_severity": case.overall,
            "cost_estimate": {"min": case.cost, "max": case.cost},
            "repair_recommendations": [],
            "report": "",
        }
    )


@dataclass
class TruthVision:
    """Answers the annotation of each photo (known by its bytes)."""

    answers: dict[bytes, str]
    name: str = "truth-vlm@1"

    def assess(self, images, claim, feedback=None) -> str:
        return self.answers[images[0].data]


@dataclass
class MapDamageModel:
    """Sees ``damages[image]`` (a fixed default for unknown photos)."""

    damages: dict[bytes, list[Damage]] = field(default_factory=dict)
    default: tuple[Damage, ...] = (Damage(type="dent", part="hood", severity="moderate"),)
    name: str = "map-damage@1"

    def detect(self, images):
        return self.damages.get(images[0].data, list(self.default))


@dataclass
class OracleBackend:
    """Writes a report for structured requests, and answers a manual question with
    ``answer(question, adapter, prompt)``; ``fail`` raises for questions containing it."""

    answer: object
    fail: str | None = None
    name: str = "oracle"
    requests: int = 0

    def adapters(self):
        return ["ft"]

    def stream(self, request):
        self.requests += 1
        user = request.messages[-1]["content"]
        if request.response_schema is not None:
            text = report_json()
        else:
            question = user.rsplit("] ", 1)[-1]
            if self.fail and self.fail in question:
                raise RuntimeError("the model crashed")
            text = self.answer(question, request.adapter, user)
        yield Event(text=text)
        yield Event(finish_reason="stop", usage=Usage(20, len(text.split())))


def reference(question: str) -> str:
    return next(q.answer for q in QUESTIONS if q.question == question)


def context(answer=lambda q, adapter, prompt: reference(q), vision=True, **extra):
    cases = photos()
    return AgentContext(
        llm=LocalChatModel(backend=OracleBackend(answer, extra.pop("fail", None))),
        manuals=FakeRetriever(MANUAL),
        damage_model=MapDamageModel(),
        vision=TruthVision({c.image: truth_answer(c) for c in cases}) if vision else None,
        **{"finetuned_adapter": "ft", **extra},
    )


def compare(ctx, cases=None, questions=QUESTIONS, **kwargs):
    return run_comparison(
        ctx, cases or photos(), questions, known_numbers=KNOWN, resamples=200, **kwargs
    )


def test_a_perfect_finetuned_model_scores_1_and_wins():
    result = compare(context(), vision_tokens=lambda images, text: (100, 10))
    fine, agentic = result.assessment_scores["finetuned"], result.assessment_scores["agentic"]
    assert fine["type_f1_micro"] == 1.0 and fine["part_f1_micro"] == 1.0
    assert fine["overall_severity_accuracy"] == 1.0 and fine["cost_mae"] == 0.0
    assert fine["overall_confusion"]["matrix"][0][0] == 4  # four minor photos, all right
    # the agentic damage model always sees a moderate hood dent: every type and part wrong
    assert agentic["type_f1_micro"] == 0.0 and agentic["overall_severity_accuracy"] == 0.0
    assert result.per_class_delta["damage-type F1"] == {"crack": 1.0, "dent": -0.0, "scratch": 1.0}
    verdicts = {v.metric: v for v in result.verdicts["assessment"]}
    f1 = verdicts["damage-type F1 (micro)"]
    assert (f1.best, f1.runner_up, f1.tie, f1.margin) == ("finetuned", "agentic", False, 1.0)
    assert f1.ci_low == f1.ci_high == 1.0
    assert not verdicts["overall-severity accuracy"].tie
    assert verdicts["failure rate"].tie  # neither failed
    # tokens: the vision counter for the fine-tuned model, the report model's usage for agentic
    assert fine["input_tokens_per_call"] == 100 and fine["output_tokens_per_call"] == 10
    assert agentic["input_tokens_per_call"] == 20 and agentic["output_tokens_per_call"] > 0
    assert all(s["latency_ms"]["p50"] > 0 for s in result.assessment_scores.values())
    # recorded outcomes re-score to the same verdicts
    again = summarize(
        result.photos,
        result.questions,
        result.assessments,
        result.chats,
        known_numbers=KNOWN,
        prices=Prices(),
        resamples=200,
    )
    assert again.verdicts == result.verdicts and again.costs == result.costs


def test_chat_modes_are_scored_and_identical_modes_tie():
    result = compare(context(), cases=photos(2))
    assert set(result.chat_scores) == {"base", "rag", "finetuned", "finetuned-rag", "agent"}
    for scores in result.chat_scores.values():
        assert scores["spec_exact_match"] == 1.0 and scores["rouge_l"] == 1.0
        assert scores["hallucinated_number_rate"] == 0.0 and scores["failed"] == 0
    for v in result.verdicts["chat"]:
        if v.metric != "mean latency (ms)":
            assert v.tie and v.margin == 0.0, v


def test_a_better_mode_wins_and_a_worse_one_is_seen_hallucinating():
    def answer(question, adapter, prompt):
        # right with the adapter and retrieved blocks; the agent's tool results ("[spec-1] ...")
        # do not help it
        good = adapter == "ft" and "Manual excerpts" in prompt and "[spec-1]" not in prompt
        return reference(question) if good else "About 45 Nm, I think."

    result = compare(context(answer), cases=photos(2), questions=QUESTIONS * 4)
    scores = result.chat_scores
    assert scores["finetuned-rag"]["spec_exact_match"] == 1.0
    assert scores["base"]["spec_exact_match"] == 0.0
    assert scores["base"]["hallucinated_number_rate"] == 1.0  # 45 is in no manual block
    spec = next(v for v in result.verdicts["chat"] if v.metric == "SPEC exact match")
    assert spec.best == "finetuned-rag" and not spec.tie and spec.margin == 1.0


def test_failures_are_counted_not_fatal():
    ctx = context(vision=False, fail="caliper")
    result = compare(ctx, questions=QUESTIONS)
    fine = result.assessment_scores["finetuned"]
    assert fine["failed"] == 8 and fine["failure_rate"] == 1.0 and fine["invalid_rate"] == 1.0
    assert "needs vision" in next(iter(fine["errors"]))
    assert fine["latency_ms"] == {}
    assert result.assessment_scores["agentic"]["failed"] == 0
    verdicts = {v.metric: v for v in result.verdicts["assessment"]}
    assert verdicts["failure rate"].best == "agentic" and not verdicts["failure rate"].tie
    assert verdicts["mean latency (ms)"].best is None  # no successful fine-tuned call
    for mode, scores in result.chat_scores.items():
        assert scores["failed"] == 1, mode  # the caliper question, in every mode
        assert "the model crashed" in next(iter(scores["errors"]))
    items = result.to_dict()["items"]["chat"]["rag"]
    assert [i["item"] for i in items if i["error"]] == ["q2"]


def test_a_mode_that_never_answers_does_not_win_on_hallucinations():
    ctx = context(lambda q, adapter, prompt: "About 45 Nm.", finetuned_adapter=None)
    result = compare(ctx, cases=photos(2))
    assert result.chat_scores["finetuned"]["failed"] == 3
    assert result.chat_scores["finetuned"]["hallucinated_number_rate"] is None
    assert result.chat_scores["base"]["hallucinated_number_rate"] == 1.0
    rate = next(v for v in result.verdicts["chat"] if v.metric == "hallucinated-number rate")
    assert rate.values["finetuned-rag"] is None and rate.best in {"base", "rag", "agent"}
    assert rate.tie and rate.margin == 0.0


def test_costs_use_the_price_table_and_training_tokens():
    prices = Prices(text_input_per_1m=1.0, text_output_per_1m=0.0, hosting_per_hour=3.6)
    training = {"chat": {"finetuned": Training(tokens=2_000_000, models=("ft",))}}
    result = compare(context(), cases=photos(2), prices=prices, training=training)
    chat = result.costs["chat"]
    # 20 input tokens per call at $1 per 1M: $0.02 per 1,000 calls
    assert chat["base"]["inference_per_1k"] == 0.02
    assert chat["finetuned"]["training"] == 55.0 and chat["base"]["training"] == 0
    assert chat["base"]["hosting_per_hour"] == 3.6 and chat["base"]["hosting_per_1k"] > 0


def test_progress_reaches_1_and_should_stop_cancels():
    seen = []
    compare(context(), cases=photos(2), progress=lambda f, m: seen.append((f, m)))
    assert len(seen) == 2 * 2 + 5 * 3
    assert [f for f, _ in seen] == sorted(f for f, _ in seen) and seen[-1][0] == 1.0
    assert seen[0][1] == "finetuned: photo p0.png"
    calls = []
    with pytest.raises(ComparisonCancelled, match="after 3 of"):
        compare(context(), cases=photos(2), should_stop=lambda: calls.append(1) or len(calls) > 3)


def test_unknown_approaches_are_rejected():
    with pytest.raises(ValueError, match="unknown approach or mode turbo"):
        compare(context(), modes=("turbo",))


def test_bootstrap_ties_identical_scores_and_reports_lower_is_better_margins():
    same = verdict("x", ["a", "b"], 10, lambda a, idx: 0.5, higher_is_better=True)
    assert same.tie and same.margin == 0.0 and (same.ci_low, same.ci_high) == (0.0, 0.0)
    latency = {"a": [100.0] * 10, "b": [150.0] * 10}
    v = verdict(
        "ms",
        ["a", "b"],
        10,
        lambda a, idx: sum(latency[a][i] for i in idx) / len(idx),
        higher_is_better=False,
    )
    assert (v.best, v.margin, v.tie) == ("a", 50.0, False)
    noisy = {"a": [1, 0] * 5, "b": [0, 1] * 5}
    v = verdict(
        "acc",
        ["a", "b"],
        10,
        lambda a, idx: sum(noisy[a][i] for i in idx) / len(idx),
        higher_is_better=True,
    )
    assert v.tie and v.ci_low < 0 < v.ci_high
