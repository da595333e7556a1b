"""A verdict per metric: the best approach (or chat mode), its margin over the runner-up and a
paired-bootstrap 95 % interval over the items (``finetune.bootstrap.verdict``); an interval
that includes 0 reads "no significant difference" (:func:`verdict_text`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agents.compare.cost import call_cost
from agents.compare.records import ClaimCase, Outcome, PhotoCase, Prices, verdict_text
from agents.compare.scoring import assessment_quality, fraud_risk, item_score, roc_auc
from finetune.bootstrap import Verdict, mean, verdict
from finetune.metrics import hallucinated_numbers, numbers

__all__ = ["assessment_verdicts", "chat_verdicts", "fraud_verdicts", "verdict_text"]
from ingest.records import QAPair


def _shared(
    outcomes: Mapping[str, Sequence[Outcome]], prices: Prices, hardware: str
) -> dict[str, tuple[Callable, bool]]:
    """Metrics every task has: failures, latency and inference cost per 1,000 requests (both
    over the successful calls; cost as :func:`agents.compare.cost.call_cost` bills it)."""

    def latency(name, idx):
        return mean({i: o.latency_ms for i, o in enumerate(outcomes[name]) if o.error is None}, idx)

    def failures(name, idx):
        return mean([float(o.error is not None) for o in outcomes[name]], idx)

    def inference(name, idx):
        per_call = {
            i: call_cost(o, prices, hardware)
            for i, o in enumerate(outcomes[name])
            if o.error is None
        }
        value = mean(per_call, idx)
        return None if value is None else 1000 * value

    return {
        "failure rate": (failures, False),
        "mean latency (ms)": (latency, False),
        f"inference cost per 1k requests ({prices.currency})": (inference, False),
    }


def assessment_verdicts(
    photos: Sequence[PhotoCase],
    outcomes: Mapping[str, Sequence[Outcome]],
    prices: Prices,
    hardware: str = "cpu",
    resamples: int = 1000,
    seed: int = 0,
) -> list[Verdict]:
    """Per metric, the best approach and its margin with a paired-bootstrap 95 % CI
    (``hardware``: what the self-hosted models ran on, for their cost)."""
    cache: dict[tuple[str, tuple[int, ...]], dict[str, Any]] = {}

    def scores(name: str, idx: Sequence[int]) -> dict[str, Any]:
        key = (name, tuple(idx))
        if key not in cache:  # every metric's bootstrap draws the same resamples
            cache[key] = assessment_quality(
                [photos[i] for i in idx], [outcomes[name][i] for i in idx]
            )
        return cache[key]

    def field_of(key: str) -> Callable:
        return lambda name, idx: scores(name, idx).get(key)

    metrics = {
        "damage-type F1 (micro)": (field_of("type_f1_micro"), True),
        "damage-type F1 (macro)": (field_of("type_f1_macro"), True),
        "part F1 (micro)": (field_of("part_f1_micro"), True),
        "severity accuracy": (field_of("severity_accuracy"), True),
        "overall-severity accuracy": (field_of("overall_severity_accuracy"), True),
        "cost MAE": (field_of("cost_mae"), False),
        **_shared(outcomes, prices, hardware),
    }
    return _verdicts(metrics, list(outcomes), len(photos), resamples, seed)


def chat_verdicts(
    questions: Sequence[QAPair],
    outcomes: Mapping[str, Sequence[Outcome]],
    known: set[str],
    prices: Prices,
    hardware: str = "cpu",
    resamples: int = 1000,
    seed: int = 0,
) -> list[Verdict]:
    """Per metric, the best chat mode and its margin over the runner-up, with a 95 % CI."""
    item_scores = {
        name: [item_score(q, o) for q, o in zip(questions, rows, strict=True)]
        for name, rows in outcomes.items()
    }
    spec = {i for i, q in enumerate(questions) if q.kind == "SPEC" and q.answerable}
    unanswerable = {i for i, q in enumerate(questions) if not q.answerable}
    counts = {  # (hallucinated, all) numbers of each successful answer
        name: {
            i: (len(hallucinated_numbers(o.output, known)), len(numbers(o.output)))
            for i, o in enumerate(rows)
            if o.error is None
        }
        for name, rows in outcomes.items()
    }

    def by_kind(spec_items: bool) -> Callable:
        def value(name, idx):
            picked = [i for i in idx if i not in unanswerable and (i in spec) == spec_items]
            return mean(item_scores[name], picked) if picked else None

        return value

    def abstention(name, idx):  # item_score of an unanswerable question: 1 for the refusal
        picked = [i for i in idx if i in unanswerable]
        return mean(item_scores[name], picked) if picked else None

    def hallucination(name, idx):
        answered = [counts[name][i] for i in idx if i in counts[name]]
        if not answered:  # no answer cannot be praised for inventing no numbers
            return None
        total = sum(all_numbers for _, all_numbers in answered)
        return sum(bad for bad, _ in answered) / total if total else 0.0

    metrics = {
        "SPEC exact match": (by_kind(True), True),
        "ROUGE-L (procedures, explanations...)": (by_kind(False), True),
        "hallucinated-number rate": (hallucination, False),
        **({"abstention on unanswerable questions": (abstention, True)} if unanswerable else {}),
        **_shared(outcomes, prices, hardware),
    }
    return _verdicts(metrics, list(outcomes), len(questions), resamples, seed)


def fraud_verdicts(
    claims: Sequence[ClaimCase],
    outcomes: Mapping[str, Sequence[Outcome]],
    resamples: int = 1000,
    seed: int = 0,
) -> list[Verdict]:
    """Per fraud metric on the labelled test claims, the best approach with a 95 % CI:
    ROC-AUC of the risk, and the recall and false-alarm rate of the claims each flags
    (level ``medium`` or higher, its own threshold)."""
    if not claims or not outcomes:
        return []
    risks = {name: [fraud_risk(o) for o in rows] for name, rows in outcomes.items()}
    labels = [c.fraud for c in claims]

    def auc(name, idx):
        return roc_auc([risks[name][i][0] for i in idx], [labels[i] for i in idx])

    def flagged_share(fraud: bool) -> Callable:
        def value(name, idx):
            picked = [risks[name][i][1] != "low" for i in idx if labels[i] == fraud]
            return sum(picked) / len(picked) if picked else None

        return value

    metrics = {
        "fraud ROC-AUC": (auc, True),
        "fraud recall (flagged medium or high)": (flagged_share(True), True),
        "false-alarm rate (honest claims flagged)": (flagged_share(False), False),
    }
    return _verdicts(metrics, list(outcomes), len(claims), resamples, seed)


def _verdicts(
    metrics: Mapping[str, tuple[Callable, bool]],
    names: list[str],
    n: int,
    resamples: int,
    seed: int,
) -> list[Verdict]:
    return [
        verdict(metric, names, n, scorer, higher_is_better=higher, resamples=resamples, seed=seed)
        for metric, (scorer, higher) in metrics.items()
    ]
