"""Vision metrics: pure functions over predictions and ground truth (no model needed).

- Damage: damage-type micro/macro-F1 over the set of types in each image, part F1, (part, type)
  pair F1, severity accuracy on the pairs found, overall-severity accuracy, cost MAE, and the
  invalid-output rate (answers that did not parse).
- Classification: accuracy, per-class accuracy, the per-class delta between two models and the
  confusion matrix (JSON, and a PNG when matplotlib is installed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ingest.taxonomy import DAMAGE_TYPES, PARTS


def f1_scores(predicted: Sequence[set], truth: Sequence[set], labels: Sequence[str]) -> dict:
    """Micro and macro F1 of per-image label sets, and F1 per label.

    Macro averages the labels that occur in the truth or the predictions.

    >>> s = f1_scores([{"dent"}, {"scratch"}], [{"dent"}, {"dent"}], ["dent", "scratch"])
    >>> s["micro"], s["per_label"]["dent"], s["per_label"]["scratch"]
    (0.5, 0.667, 0.0)
    """
    per_label: dict[str, float] = {}
    tp_all = fp_all = fn_all = 0
    for label in labels:
        tp = sum(1 for p, t in zip(predicted, truth, strict=True) if label in p and label in t)
        fp = sum(1 for p, t in zip(predicted, truth, strict=True) if label in p and label not in t)
        fn = sum(1 for p, t in zip(predicted, truth, strict=True) if label not in p and label in t)
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        if tp + fp + fn:
            per_label[label] = round(_f1(tp, fp, fn), 3)
    macro = sum(per_label.values()) / len(per_label) if per_label else 0.0
    return {
        "micro": round(_f1(tp_all, fp_all, fn_all), 3),
        "macro": round(macro, 3),
        "per_label": per_label,
    }


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def damage_scores(
    predicted: Sequence[Sequence[Mapping[str, Any]] | None],
    truth: Sequence[Sequence[Mapping[str, Any]]],
    *,
    predicted_overall: Sequence[str | None] = (),
    true_overall: Sequence[str | None] = (),
    predicted_cost: Sequence[float | None] = (),
    true_cost: Sequence[float | None] = (),
) -> dict[str, Any]:
    """Scores of damage predictions against annotations, one list of damages per image
    (``{"type", "part", "severity"}``). A prediction of None is an invalid output: it counts
    in the invalid rate and as an empty prediction everywhere else.

    >>> truth = [[{"type": "dent", "part": "hood", "severity": "minor"}]]
    >>> damage_scores([None], truth)["invalid_rate"], damage_scores(truth, truth)["type_f1_macro"]
    (1.0, 1.0)
    """
    invalid = sum(1 for p in predicted if p is None)
    predicted = [p or [] for p in predicted]
    types = f1_scores(
        [{d["type"] for d in p} for p in predicted],
        [{d["type"] for d in t} for t in truth],
        DAMAGE_TYPES,
    )
    parts = f1_scores(
        [{d["part"] for d in p} for p in predicted], [{d["part"] for d in t} for t in truth], PARTS
    )
    pair_sets = [[{(d["part"], d["type"]) for d in x} for x in side] for side in (predicted, truth)]
    tp = sum(len(p & t) for p, t in zip(*pair_sets, strict=True))
    fp = sum(len(p - t) for p, t in zip(*pair_sets, strict=True))
    fn = sum(len(t - p) for p, t in zip(*pair_sets, strict=True))
    matched = correct = 0
    for p, t in zip(predicted, truth, strict=True):
        true_severity = {(d["part"], d["type"]): d.get("severity") for d in t}
        for d in p:
            key = (d["part"], d["type"])
            if key in true_severity:
                matched += 1
                correct += d.get("severity") == true_severity[key]
    scores: dict[str, Any] = {
        "n": len(truth),
        "type_f1_micro": types["micro"],
        "type_f1_macro": types["macro"],
        "type_f1": types["per_label"],
        "part_f1_micro": parts["micro"],
        "part_f1_macro": parts["macro"],
        "pair_f1": round(_f1(tp, fp, fn), 3),
        "severity_accuracy": round(correct / matched, 3) if matched else None,
        "invalid_rate": round(invalid / len(truth), 4) if truth else 0.0,
    }
    pairs = [(p, t) for p, t in zip(predicted_overall, true_overall, strict=False) if t]
    if pairs:
        scores["overall_severity_accuracy"] = round(sum(p == t for p, t in pairs) / len(pairs), 3)
    costs = [
        (p, t)
        for p, t in zip(predicted_cost, true_cost, strict=False)
        if p is not None and t is not None
    ]
    if costs:
        scores["cost_mae"] = round(sum(abs(p - t) for p, t in costs) / len(costs), 1)
    return scores


def classification_scores(
    predicted: Sequence[str], truth: Sequence[str], classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class accuracy (recall) and the confusion matrix (rows: truth).

    >>> s = classification_scores(["a", "b", "b"], ["a", "a", "b"], ["a", "b"])
    >>> s["accuracy"], s["per_class"], s["confusion"]["matrix"]
    (0.667, {'a': 0.5, 'b': 1.0}, [[1, 1], [0, 1]])
    """
    index = {c: i for i, c in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for p, t in zip(predicted, truth, strict=True):
        if t in index and p in index:
            matrix[index[t]][index[p]] += 1
    per_class = {}
    for c in classes:
        total = sum(1 for t in truth if t == c)
        if total:
            per_class[c] = round(
                sum(1 for p, t in zip(predicted, truth, strict=True) if t == c and p == c) / total,
                3,
            )
    correct = sum(p == t for p, t in zip(predicted, truth, strict=True))
    return {
        "accuracy": round(correct / len(truth), 3) if truth else 0.0,
        "per_class": per_class,
        "n": len(truth),
        "confusion": {"labels": list(classes), "matrix": matrix},
    }


def per_class_delta(base: Mapping[str, float], tuned: Mapping[str, float]) -> dict[str, float]:
    """Fine-tuned minus base accuracy per class.

    >>> per_class_delta({"a": 0.5, "b": 1.0}, {"a": 0.75, "b": 1.0})
    {'a': 0.25, 'b': 0.0}
    """
    return {c: round(tuned[c] - base.get(c, 0.0), 3) for c in tuned}


def confusion_png(confusion: Mapping[str, Any], path: Path, title: str = "") -> bool:
    """Draw the confusion matrix; False (nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels, matrix = confusion["labels"], confusion["matrix"]
    size = max(4.0, 0.35 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    axes.set_yticks(range(len(labels)), labels, fontsize=7)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if len(labels) <= 30:
        for row, values in enumerate(matrix):
            for col, value in enumerate(values):
                if value:
                    axes.text(col, row, str(value), ha="center", va="center", fontsize=7)
    axes.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
