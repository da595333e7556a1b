"""From recorded outcomes to a :class:`Comparison`: scores, per-class deltas, costs and
verdicts of every approach and chat mode."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agents.compare.cost import ASSESSMENT_MODELS, CHAT_MODELS, billing, cost
from agents.compare.records import (
    ClaimCase,
    Comparison,
    Outcome,
    PhotoCase,
    Prices,
    Training,
    chat_records,
)
from agents.compare.scoring import score_assessments, score_chat, score_fraud
from agents.compare.verdicts import assessment_verdicts, chat_verdicts, fraud_verdicts
from agents.judge import RuleJudge, judge_rates
from finetune.vision_metrics import per_class_delta
from ingest.records import QAPair


def summarize(
    photos: Sequence[PhotoCase],
    questions: Sequence[QAPair],
    assessments: dict[str, list[Outcome]],
    chats: dict[str, list[Outcome]],
    *,
    known_numbers: set[str],
    prices: Prices,
    training: Mapping[str, Mapping[str, Training]] | None = None,
    tokens_counted: bool = True,
    hardware: str = "cpu",
    llm_hosted: bool = False,
    claims: Sequence[ClaimCase] = (),
    frauds: dict[str, list[Outcome]] | None = None,
    concurrency: int = 1,
    wall_s: dict[str, dict[str, float]] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Scores, costs and verdicts of recorded outcomes (``tokens_counted``: whether the
    fine-tuned assessment's vision-model tokens were counted; ``hardware``: what the
    self-hosted models ran on; ``llm_hosted``: whether a server hosted the text model;
    ``frauds``: each approach's fraud outcomes on ``claims``; ``concurrency`` and ``wall_s``:
    how many calls were in flight at once and how long each approach's run took). The chat
    answers are also labelled by the offline rule judge (:mod:`agents.judge`), the seed
    evaluation's table of correct ... invalid-format rates."""
    frauds = frauds or {}
    assessment_scores = {a: score_assessments(photos, rows) for a, rows in assessments.items()}
    deltas = {}
    if "finetuned" in assessment_scores and "agentic" in assessment_scores:
        fine, agentic = assessment_scores["finetuned"], assessment_scores["agentic"]
        deltas = {
            label: per_class_delta(*_aligned(agentic[key], fine[key]))
            for label, key in (
                ("damage-type F1", "type_f1"),
                ("damage severity recall", "severity_per_class"),
                ("overall-severity accuracy", "overall_per_class"),
            )
        }
    chat_scores = {m: score_chat(questions, rows, known_numbers) for m, rows in chats.items()}
    training = training or {}
    # without a counter, the vision model's tokens are unknown, not free
    uncounted = set() if tokens_counted else {"finetuned"}
    for name in uncounted & set(assessment_scores):
        assessment_scores[name].update(input_tokens_per_call=None, output_tokens_per_call=None)
    costs = {
        task: {
            name: cost(
                rows,
                billing(models(name), llm_hosted),
                prices,
                training.get(task, {}).get(name, Training()),
                hardware,
                counted=task == "chat" or name not in uncounted,
            )
            for name, rows in outcomes.items()
        }
        for task, outcomes, models in (
            ("assessment", assessments, ASSESSMENT_MODELS.__getitem__),
            ("chat", chats, lambda _: CHAT_MODELS),
        )
    }
    return Comparison(
        photos=list(photos),
        questions=list(questions),
        assessments=assessments,
        chats=chats,
        assessment_scores=assessment_scores,
        per_class_delta=deltas,
        chat_scores=chat_scores,
        costs=costs,
        verdicts={
            "assessment": assessment_verdicts(
                photos, assessments, prices, hardware, resamples, seed
            ),
            "chat": chat_verdicts(
                questions, chats, known_numbers, prices, hardware, resamples, seed
            ),
            "fraud": fraud_verdicts(claims, frauds, resamples, seed),
        },
        prices=prices,
        hardware=hardware,
        claims=list(claims),
        frauds=frauds,
        fraud_scores={a: score_fraud(claims, rows) for a, rows in frauds.items()},
        concurrency=concurrency,
        wall_s=wall_s or {},
        judge=(
            judge_rates(chat_records(questions, chats), RuleJudge()).to_dict(with_items=False)
            if chats and questions
            else {}
        ),
    )


def _aligned(a: dict[str, float], b: dict[str, float]) -> tuple[dict, dict]:
    """Both score maps over the classes either has (a class one of them never saw scores 0)."""
    classes = sorted({*a, *b})
    return {c: a.get(c, 0.0) for c in classes}, {c: b.get(c, 0.0) for c in classes}
