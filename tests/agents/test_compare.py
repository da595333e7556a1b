from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import httpx
import pytest

from agents.backends.base import Event, Usage
from agents.backends.openai_compat import OpenAICompatibleBackend
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


def rescore(result, **kwargs):
    """The recorded outcomes of ``result`` summarized again (other prices, hardware...)."""
    return summarize(
        result.photos,
        result.questions,
        result.assessments,
        result.chats,
        known_numbers=KNOWN,
        resamples=200,
        **kwargs,
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
    again = rescore(result, prices=Prices())
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
    # the offline judge: 45 Nm against 110 Nm contradicts it; the procedure answer is wrong
    judged = result.to_dict()["judge"]
    base, good = judged["per_mode"]["base"], judged["per_mode"]["finetuned-rag"]
    assert good["correct_rate"] == 1.0 and good["total_responses"] == 12
    assert base["correct_rate"] == 0.0 and base["contradiction_rate"] == round(8 / 12, 4)
    assert judged["agreement_with_exact_match"]["rate"] == 1.0 and "items" not in judged


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


def test_self_hosted_models_are_billed_by_the_wall_time_of_their_calls():
    # $1 a second on the CPU, and token prices that would dwarf it if tokens were billed
    prices = Prices(cpu_per_hour=3600.0, gpu_per_hour=7200.0, text_input_per_1m=1e6)
    result = compare(context(), cases=photos(2), prices=prices)
    for task, outcomes in (("assessment", result.assessments), ("chat", result.chats)):
        for name, rows in outcomes.items():
            billed = result.costs[task][name]
            assert (billed["billing"], billed["hardware"]) == ("compute", "cpu"), name
            seconds = [o.compute_s for o in rows if o.error is None]
            # the model calls happen inside the request, which also retrieves and parses
            assert all(0 < o.compute_s <= o.latency_ms / 1000 for o in rows), name
            assert all(o.hosted_input_tokens == o.hosted_output_tokens == 0 for o in rows)
            mean_s = sum(seconds) / len(seconds)
            assert billed["inference_per_1k"] == pytest.approx(1000 * mean_s, rel=1e-4)
    verdicts = {v.metric: v for v in result.verdicts["chat"]}
    cost = verdicts["inference cost per 1k requests (USD)"]
    expected = result.costs["chat"]["base"]["inference_per_1k"]
    assert cost.values["base"] == pytest.approx(expected, abs=1e-4)  # verdicts keep 4 decimals
    # the same calls on the GPU cost its hourly price
    on_gpu = rescore(result, prices=prices, hardware="gpu")
    base, base_gpu = result.costs["chat"]["base"], on_gpu.costs["chat"]["base"]
    assert base_gpu["inference_per_1k"] == pytest.approx(2 * base["inference_per_1k"])
    assert on_gpu.to_dict()["hardware"]["per_hour"] == 7200.0


def hosted_llm(seen: list) -> LocalChatModel:
    """The text model on an OpenAI-compatible server (a mock): 12 tokens in, 3 out per call."""

    def handle(request: httpx.Request) -> httpx.Response:
        payload = json.loads(request.content)
        seen.append(payload)
        text = report_json() if "response_format" in payload else "It is 110 Nm."
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}},
        ]
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx.Response(
            200, content=body.encode(), headers={"content-type": "text/event-stream"}
        )

    backend = OpenAICompatibleBackend(
        "http://llm/v1", "base", adapters={"ft": "ft"}, transport=httpx.MockTransport(handle)
    )
    return LocalChatModel(backend=backend)


def test_a_hosted_text_model_is_billed_by_its_tokens():
    seen: list = []
    ctx = dataclasses.replace(context(), llm=hosted_llm(seen))
    # compute is free here: what is billed comes from the tokens
    prices = Prices(cpu_per_hour=0.0, text_input_per_1m=1000.0, text_output_per_1m=2000.0)
    result = compare(ctx, cases=photos(2), questions=QUESTIONS[:1], prices=prices)
    assert seen  # the server answered
    costs = result.costs
    assert costs["chat"]["base"]["billing"] == "tokens"
    # 12 tokens in at $1,000 per 1M and 3 out at $2,000 per 1M: $0.018 a call
    assert costs["chat"]["base"]["inference_per_1k"] == pytest.approx(18.0)
    assert costs["assessment"]["finetuned"]["billing"] == "compute"  # the vision model
    agentic = costs["assessment"]["agentic"]
    assert agentic["billing"] == "compute + tokens"  # the damage model and the report writer
    assert agentic["inference_per_1k"] == pytest.approx(18.0)
    for outcome in result.assessments["agentic"]:
        assert (outcome.hosted_input_tokens, outcome.hosted_output_tokens) == (12, 3)
        assert outcome.compute_s > 0  # the damage model's call
    assert all(o.compute_s == 0 for o in result.chats["base"])  # no self-hosted model called


def test_training_is_billed_by_its_wall_time_beside_a_hosted_services_token_price():
    prices = Prices(cpu_per_hour=2.0, training_per_1m_tokens=27.5)
    training = {
        "chat": {
            "finetuned": Training(tokens=2_000_000, models=("ft",), seconds=1800.0),
            "agent": Training(tokens=10, models=("ft",), seconds=None),  # no throughput known
        }
    }
    result = compare(context(), cases=photos(2), prices=prices, training=training)
    chat = result.costs["chat"]
    assert (chat["finetuned"]["training"], chat["finetuned"]["training_hosted"]) == (1.0, 55.0)
    assert chat["finetuned"]["training_s"] == 1800.0
    assert (chat["base"]["training"], chat["base"]["training_hosted"]) == (0.0, 0.0)
    assert chat["agent"]["training"] is None


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
