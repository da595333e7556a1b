"""Scoring a trained vision model on held-out photos (``tunegraph eval vision``).

- an image classifier (``task="classify"``): accuracy, per-class accuracy and the confusion
  matrix (a PNG beside the results), with per-class deltas against a base model when given;
- the damage model (``task="damage"``): damage-type/part F1 and severity accuracy (it states no
  cost: in the agentic approach the claims history prices its damages);
- a vision-language model (``task="damage"`` on a folder with ``vlm.json``): its JSON answers,
  scored like the damage model's, cost MAE of the range it wrote, and its decoding speed;

each with latency statistics from one-photo calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from finetune.metrics import latency_stats
from finetune.vision_datasets import (
    VisionDataError,
    classification_examples,
    damage_examples,
    decode,
)
from finetune.vision_metrics import (
    classification_scores,
    confusion_png,
    damage_scores,
    per_class_delta,
)
from ingest.taxonomy import SEVERITIES

LATENCY_IMAGES = 16  # a VLM's latency: one-photo calls on this many photos
VLM_BATCH = 16


def evaluate_vision(
    task: str,
    model_dir: Path,
    *,
    base_dir: Path | None = None,
    test_file: Path | None = None,
    images_dir: Path | None = None,
    demo_dir: Path,
    out: Path,
    load_causal_lm: Callable[[str], tuple[Any, Any]],
    progress: Callable[..., Any] | None = None,
    engine_cache: Path | None = None,
) -> dict[str, Any]:
    """Score the model in ``model_dir`` on test photos and write ``out/results.json``.

    ``task``: ``classify`` (``test_file``: classification JSONL; ``base_dir``: a second model to
    compare with) or ``damage`` (``test_file``: a COCO file with its ``images_dir``; default the
    demo corpus's test split in ``demo_dir``). ``load_causal_lm(name)``: the model store's loader
    of a VLM's decoder; ``engine_cache``: where its decoder is built for the engine (None:
    torch). Returns the results; ``rejected`` lists the photos left out. Raises
    :class:`VisionDataError`, ``VisionModelError`` or ``ValueError``, each saying what to change.
    """
    from finetune.vision_lm import CONFIG_FILE as VLM_CONFIG

    if task == "classify":
        if test_file is None:
            raise VisionDataError("--task classify needs --test TEST.jsonl")
        examples, rejected = classification_examples(jsonl=test_file)
    elif test_file is None:
        examples, rejected = damage_examples("test", demo_dir=demo_dir)
    else:
        examples, rejected = damage_examples("test", coco_file=test_file, images_dir=images_dir)
    test = decode(examples, progress, "test images")
    rejected += test.rejected
    if task == "classify":
        result = _classify(model_dir, base_dir, test.items, out)
    elif (model_dir / VLM_CONFIG).is_file():
        result = _vlm(model_dir, test.items, load_causal_lm, progress, engine_cache)
    else:
        result = _damage(model_dir, test.items)
    result["rejected"] = rejected
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return result


def _timed(function: Callable[[Any], Any], items: Sequence[Any]) -> tuple[list, list[float]]:
    """``function`` of each item, and each call's wall time in milliseconds."""
    outputs, latencies = [], []
    for item in items:
        started = time.perf_counter()
        outputs.append(function(item))
        latencies.append((time.perf_counter() - started) * 1000)
    return outputs, latencies


def _classify(
    model_dir: Path, base_dir: Path | None, items: Sequence[tuple[Any, Any]], out: Path
) -> dict[str, Any]:
    from finetune.vision_models import ImageClassifier

    truth = [label for _, label in items]
    report: dict[str, Any] = {}
    for role, directory in (("base", base_dir), ("model", model_dir)):
        if directory is None:
            continue
        classifier = ImageClassifier.load(directory)
        if classifier.task != "classify":
            raise ValueError(
                f"{directory} is a {classifier.task!r} model; use --task {classifier.task}"
            )
        predicted, latencies = _timed(
            lambda p, c=classifier: c.classify([p])[0][0], [p for p, _ in items]
        )
        scores = classification_scores(predicted, truth, classifier.labels)
        scores["latency_ms"] = latency_stats(latencies)
        scores["model"] = classifier.name
        if confusion_png(scores["confusion"], out / f"confusion-{role}.png", classifier.name):
            scores["confusion_png"] = str(out / f"confusion-{role}.png")
        report[role] = scores
    result = {
        "accuracy": report["model"]["accuracy"],
        "per_class": report["model"]["per_class"],
        "n": report["model"]["n"],
        "model": report["model"],
    }
    if "base" in report:
        result["base"] = report["base"]
        result["per_class_delta"] = per_class_delta(
            report["base"]["per_class"], report["model"]["per_class"]
        )
    return result


def _damage(model_dir: Path, items: Sequence[tuple[Any, Any]]) -> dict[str, Any]:
    from finetune.vision_models import ImageClassifier

    classifier = ImageClassifier.load(model_dir)
    if classifier.task != "damage":
        raise ValueError(
            f"{model_dir} is a {classifier.task!r} model; use --task {classifier.task}"
        )
    predicted, latencies = _timed(lambda p: classifier.damages([p])[0], [p for p, _ in items])
    examples = [example for _, example in items]
    scores = damage_scores(
        [[d.model_dump() for d in found] for found in predicted],
        _true_damages(examples),
        predicted_overall=[
            max((d.severity for d in found), key=SEVERITIES.index) for found in predicted
        ],
        true_overall=[e.severity for e in examples],
    )
    return {**scores, "latency_ms": latency_stats(latencies), "model": classifier.name}


def _vlm(
    model_dir: Path,
    items: Sequence[tuple[Any, Any]],
    load_causal_lm: Callable[[str], tuple[Any, Any]],
    progress: Callable[..., Any] | None,
    engine_cache: Path | None = None,
) -> dict[str, Any]:
    """The vision-language model's answers to every test photo (batched), scored like the
    damage model's; latency from one-photo calls on the first ``LATENCY_IMAGES`` photos (a
    call generates ~100 tokens: timing all of them one by one takes minutes on a CPU)."""
    from finetune.vision_lm import VisionLM

    model = VisionLM.load(model_dir, load_causal_lm, engine_cache=engine_cache)
    pictures = [p for p, _ in items]
    starts = range(0, len(pictures), VLM_BATCH)
    if progress is not None:
        starts = progress(starts, desc="answer test photos", unit="batch")
    answers, started = [], time.perf_counter()
    for start in starts:
        answers += model.answer(pictures[start : start + VLM_BATCH])
    seconds = time.perf_counter() - started
    _, latencies = _timed(lambda p: model.answer([p]), pictures[:LATENCY_IMAGES])
    parsed = [json.loads(a.text) if a.complete else None for a in answers]
    examples = [example for _, example in items]
    scores = damage_scores(
        [p["damages"] if p else None for p in parsed],
        _true_damages(examples),
        predicted_overall=[p["overall_severity"] if p else None for p in parsed],
        true_overall=[e.severity for e in examples],
        predicted_cost=[
            (p["cost_estimate"]["min"] + p["cost_estimate"]["max"]) / 2 if p else None
            for p in parsed
        ],
        true_cost=[e.cost for e in examples],
    )
    return {
        **scores,
        "latency_ms": latency_stats(latencies),
        "latency_images": len(latencies),
        "batched_images_per_s": round(len(pictures) / seconds, 2) if seconds else None,
        "tokens_per_s": round(sum(a.tokens for a in answers) / seconds, 1) if seconds else None,
        "model": model.name,
    }


def _true_damages(examples: Sequence[Any]) -> list[list[dict[str, Any]]]:
    return [
        [{"type": d.type, "part": d.part, "severity": d.severity} for d in e.damages]
        for e in examples
    ]
