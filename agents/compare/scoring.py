"""Quality, failures, latency and tokens of recorded outcomes: an assessment approach on the
held-out photos, a chat mode on the held-out questions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.compare.records import ClaimCase, Outcome, PhotoCase
from finetune.datasets import is_refusal
from finetune.evaluation import Generated, score
from finetune.metrics import latency_stats, rouge_l, spec_exact_match
from finetune.vision_metrics import classification_scores, damage_scores
from ingest.records import QAPair
from ingest.taxonomy import DAMAGE_TYPES, OVERALL_SEVERITIES, SEVERITIES

NONE = "none"  # a damage type matrix's row of spurious damages, column of missed ones


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
    types, severities = damage_pairs(photos, rows)
    severity = classification_scores(
        [p for _, p in severities], [t for t, _ in severities], SEVERITIES
    )
    return {
        **scores,
        **_failures(rows),
        "overall_confusion": confusion["confusion"],
        "overall_per_class": confusion["per_class"],
        "type_confusion": classification_scores(
            [p for _, p in types], [t for t, _ in types], (*DAMAGE_TYPES, NONE)
        )["confusion"],
        "severity_confusion": severity["confusion"],
        "severity_per_class": severity["per_class"],
        **_usage(rows),
    }


def damage_pairs(
    photos: Sequence[PhotoCase], rows: Sequence[Outcome]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (true, predicted) damage types and the (true, predicted) severities of each photo's
    damages, matched on the part: first the damages both name with the same part and type
    (their severities are compared, as ``severity_accuracy`` does), then the same part with
    another type; a true damage left over was missed (predicted ``none``), a predicted one left
    over is spurious (true ``none``). A failed call predicted nothing.

    >>> truth = PhotoCase("p", b"", ({"type": "dent", "part": "hood", "severity": "minor"},
    ...                             {"type": "crack", "part": "trunk", "severity": "severe"}))
    >>> said = Outcome({"damages": [{"type": "scratch", "part": "hood", "severity": "minor"},
    ...                             {"type": "dent", "part": "roof", "severity": "minor"}]})
    >>> damage_pairs([truth], [said])
    ([('dent', 'scratch'), ('crack', 'none'), ('none', 'dent')], [])
    """
    types: list[tuple[str, str]] = []
    severities: list[tuple[str, str]] = []
    for photo, outcome in zip(photos, rows, strict=True):
        left = list(_damages(outcome) or [])
        missed = []
        for true in photo.damages:
            same = next(
                (d for d in left if (d["part"], d["type"]) == (true["part"], true["type"])), None
            )
            if same is None:
                missed.append(true)
                continue
            left.remove(same)
            types.append((true["type"], same["type"]))
            severities.append((true["severity"], same["severity"]))
        for true in missed:
            other = next((d for d in left if d["part"] == true["part"]), None)
            if other is not None:
                left.remove(other)
            types.append((true["type"], other["type"] if other else NONE))
        types += [(NONE, d["type"]) for d in left]
    return types, severities


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
        "by_kind": chat_by_kind(questions, rows, known),
        **_failures(rows),
        **_usage(rows),
    }


def chat_by_kind(
    questions: Sequence[QAPair], rows: Sequence[Outcome], known: set[str]
) -> dict[str, dict[str, Any]]:
    """Per kind of question: how many (and how many the manual cannot answer), SPEC exact match
    or ROUGE-L of the answerable ones, abstention on the unanswerable ones, false abstention on
    the answerable ones and the hallucinated-number rate (``finetune.evaluation.score`` of the
    kind's questions; a failed call answered "")."""
    table = {}
    for kind in sorted({q.kind for q in questions}):
        picked = [(q, o) for q, o in zip(questions, rows, strict=True) if q.kind == kind]
        answers = [Generated(o.output or "", o.stopped, o.latency_ms) for _, o in picked]
        scores = score([q for q, _ in picked], answers, known)
        row = scores["per_kind"].get(kind, {})
        table[kind] = {
            "n": len(picked),
            "unanswerable": scores["unanswerable"],
            "spec_exact_match": row.get("spec_exact_match"),
            "rouge_l": row.get("rouge_l"),
            "abstention_rate": scores["abstention_rate"],
            "false_abstention_rate": scores["false_abstention_rate"],
            "hallucinated_number_rate": scores["hallucinated_number_rate"],
        }
    return table


def fraud_risk(outcome: Outcome) -> tuple[float, str]:
    """The risk and level an approach gave a claim; a failed call flagged nothing (0, low)."""
    if outcome.output is None:
        return 0.0, "low"
    return float(outcome.output["risk"]), outcome.output["level"]


def score_fraud(claims: Sequence[ClaimCase], rows: Sequence[Outcome]) -> dict[str, Any]:
    """Fraud detection on labelled claims: ROC-AUC of the risk (None when the claims are all of
    one label; 0.5 for a risk that never changes), precision and recall of the claims the
    approach flags at its own levels (``medium`` or higher, and ``high``), recall per fraud
    pattern at ``medium``, and whether the risk was the same for every claim (no signal)."""
    risks = [fraud_risk(o) for o in rows]
    labels = [c.fraud for c in claims]
    at = {}
    for name, levels in (("medium", ("medium", "high")), ("high", ("high",))):
        flagged = [level in levels for _, level in risks]
        at[name] = precision_recall(flagged, labels)
    patterns: dict[str, list[bool]] = {}
    for case, (_, level) in zip(claims, risks, strict=True):
        if case.fraud:
            patterns.setdefault(case.pattern or "unknown", []).append(level != "low")
    auc = roc_auc([r for r, _ in risks], labels)
    return {
        "n": len(claims),
        "fraud": sum(labels),
        "roc_auc": None if auc is None else round(auc, 4),
        "constant_risk": len({r for r, _ in risks}) <= 1,
        "mean_risk": round(sum(r for r, _ in risks) / len(risks), 4) if risks else None,
        "at": at,
        "recall_by_pattern": {
            p: round(sum(hits) / len(hits), 4) for p, hits in sorted(patterns.items())
        },
        **_failures(rows),
    }


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """The area under the ROC curve: the chance that a random positive scores above a random
    negative, ties counting half (Mann-Whitney U over average ranks). None without both
    labels.

    >>> roc_auc([0.9, 0.1, 0.5, 0.5], [True, False, True, False])
    0.875
    >>> roc_auc([0.0, 0.0, 0.0], [True, False, False])
    0.5
    """
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1  # ties share their average rank
        start = end + 1
    rank_sum = sum(r for r, label in zip(ranks, labels, strict=True) if label)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def precision_recall(flagged: Sequence[bool], labels: Sequence[bool]) -> dict[str, Any]:
    """How many were flagged; precision (None when nothing was), recall (None without
    positives) and the false-alarm rate (None without negatives).

    >>> precision_recall([True, True, False, False], [True, False, True, False])
    {'flagged': 2, 'precision': 0.5, 'recall': 0.5, 'false_alarm_rate': 0.5}
    """
    pairs = list(zip(flagged, labels, strict=True))
    hits = sum(1 for f, label in pairs if f and label)
    n_flagged = sum(1 for f, _ in pairs if f)
    positives = sum(1 for _, label in pairs if label)
    negatives = len(pairs) - positives
    return {
        "flagged": n_flagged,
        "precision": round(hits / n_flagged, 4) if n_flagged else None,
        "recall": round(hits / positives, 4) if positives else None,
        "false_alarm_rate": round((n_flagged - hits) / negatives, 4) if negatives else None,
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
