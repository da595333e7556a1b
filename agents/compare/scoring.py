"""Quality, failures, latency and tokens of recorded outcomes: an assessment approach on the
held-out photos, a chat mode on the held-out questions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.compare.records import Outcome, PhotoCase
from finetune.datasets import is_refusal
from finetune.evaluation import Generated, score
from finetune.metrics import latency_stats, rouge_l, spec_exact_match
from finetune.vision_metrics import classification_scores, damage_scores
from ingest.records import QAPair
from ingest.taxonomy import OVERALL_SEVERITIES


def _damages(outcome: Outcome) -> list[dict[str, Any]] | None:
    return None if outcome.output is None else outcome.output["damages"]


def _overall(outcome: Outcome) -> str | None:
    return None if outcome.output is None else outcome.output["overall_severity"]


def _cost_mid(outcome: Outcome) -> float | None:
    if outcome.output is None:
        return None
    estimate = outcome.output["cost_estimate"]
    return (estimate["min"] + estimate["max"]) / 2


def assessment_quality(photos: Sequence[PhotoCase], rows: Sequence[Outcome]) -> dict[str, Any]:
    """``finetune.vision_metrics.damage_scores`` of the assessments against the annotations
    (a failed call is an empty prediction)."""
    return damage_scores(
        [_damages(o) for o in rows],
        [list(p.damages) for p in photos],
        predicted_overall=[_overall(o) for o in rows],
        true_overall=[p.overall for p in photos],
        predicted_cost=[_cost_mid(o) for o in rows],
        true_cost=[p.cost for p in photos],
    )


def score_assessments(photos: Sequence[PhotoCase], rows: Sequence[Outcome]) -> dict[str, Any]:
    """Damage-type/part F1, severity and overall-severity accuracy, cost MAE (middle of the
    estimated range against the annotated cost), the overall-severity confusion matrix, the
    failure rate, latency of the successful calls and tokens per call. A failed call counts
    as an invalid (empty) prediction."""
    scores = assessment_quality(photos, rows)
    scored = [(p.overall, _overall(o)) for p, o in zip(photos, rows, strict=True) if p.overall]
    confusion = classification_scores(
        [pred or "none" for _, pred in scored], [true for true, _ in scored], OVERALL_SEVERITIES
    )
    return {
        **scores,
        **_failures(rows),
        "overall_confusion": confusion["confusion"],
        "overall_per_class": confusion["per_class"],
        **_usage(rows),
    }


def score_chat(
    questions: Sequence[QAPair], rows: Sequence[Outcome], known: set[str]
) -> dict[str, Any]:
    """``finetune.evaluation.score`` (SPEC exact match, ROUGE-L per kind, hallucinated-number
    rate) of the answers (a failed call answers "": it scores 0, and the hallucination rate is
    None when no call succeeded), plus failures, latency of the successful calls and tokens
    per call."""
    answers = [Generated(o.output or "", o.stopped, o.latency_ms) for o in rows]
    scores = score(questions, answers, known)
    if all(o.error is not None for o in rows):
        scores["hallucinated_number_rate"] = None
    rouge = [
        item_score(q, o)
        for q, o in zip(questions, rows, strict=True)
        if q.kind != "SPEC" and q.answerable
    ]
    return {
        **scores,
        "rouge_l": round(sum(rouge) / len(rouge), 4) if rouge else None,
        **_failures(rows),
        **_usage(rows),
    }


def item_score(question: QAPair, outcome: Outcome) -> float:
    """One answer's score: exact match of a SPEC value, ROUGE-L F1 for the other kinds; for a
    question the manual cannot answer, 1 for the refusal and 0 for anything else."""
    answer = outcome.output or ""
    if not question.answerable:
        return float(is_refusal(answer))
    if is_refusal(answer):
        return 0.0
    if question.kind == "SPEC":
        return float(spec_exact_match(answer, question.answer))
    return rouge_l(answer, question.answer)


def _failures(rows: Sequence[Outcome]) -> dict[str, Any]:
    """How many calls failed, their rate, and the five most frequent errors."""
    failed = sum(o.error is not None for o in rows)
    counts: dict[str, int] = {}
    for o in rows:
        if o.error is not None:
            counts[o.error] = counts.get(o.error, 0) + 1
    return {
        "failed": failed,
        "failure_rate": round(failed / len(rows), 4) if rows else 0,
        "errors": dict(sorted(counts.items(), key=lambda kv: -kv[1])[:5]),
    }


def _usage(rows: Sequence[Outcome]) -> dict[str, Any]:
    """Latency and tokens of the successful calls."""
    ok = [o for o in rows if o.error is None]
    n = len(ok) or 1
    return {
        "latency_ms": latency_stats([o.latency_ms for o in ok]),
        "input_tokens_per_call": round(sum(o.input_tokens for o in ok) / n, 1),
        "output_tokens_per_call": round(sum(o.output_tokens for o in ok) / n, 1),
    }
