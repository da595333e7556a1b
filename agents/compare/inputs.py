"""What the comparison runs on, read from disk: the demo corpus's held-out photos and
questions, the numbers its manual states, a price table, and the training each approach's
models took (from their manifests)."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from agents.compare.records import (
    ALL,
    CompareError,
    PhotoCase,
    Prices,
    Size,
    TrainedModels,
    Training,
)
from ingest.records import QAPair


def load_prices(path: Path | None, overrides: Mapping[str, float] | None = None) -> Prices:
    """The default price table, with a YAML file's values on top, then ``overrides``; unknown
    keys are errors that list the valid ones."""
    from finetune.config import ConfigError, load_config

    try:
        return load_config(Prices, path, [f"{k}={v}" for k, v in (overrides or {}).items()])
    except ConfigError as exc:
        valid = ", ".join(f.name for f in fields(Prices))
        raise CompareError(f"--prices: {exc} (keys: {valid})") from None


def photo_cases(demo_dir: Path, n: Size, seed: int = 0) -> list[PhotoCase]:
    """A seeded sample of ``n`` photos of the demo's test split with their annotations
    (``"all"``, or a count at least the split's size: every test photo)."""
    from finetune.vision_datasets import VisionDataError, damage_examples

    try:
        examples, _ = damage_examples("test", demo_dir=demo_dir)
    except VisionDataError as exc:
        raise CompareError(str(exc)) from None
    if n != ALL and n < len(examples):
        examples = sorted(random.Random(seed).sample(examples, n), key=lambda e: e.image_id)
    return [
        PhotoCase(
            id=e.path.name,
            image=e.path.read_bytes(),
            damages=tuple(
                {"type": d.type, "part": d.part, "severity": d.severity} for d in e.damages
            ),
            overall=e.severity,
            cost=e.cost,
        )
        for e in examples
    ]


def held_out_questions(
    demo_dir: Path, n: Size, seed: int = 0, path: Path | None = None
) -> list[QAPair]:
    """``n`` of the test questions in ``path`` (default: the demo's), stratified by kind
    (:func:`stratified`), as ``tunegraph eval text`` takes them; ``path`` is the test split an
    adapter kept (its unanswerable questions included) when there is one. ``"all"``: every
    question of the split."""
    if n == 0:
        return []
    path = path or demo_dir / "manual" / "qa" / "test.jsonl"
    try:
        items = [QAPair(**json.loads(line)) for line in _lines(path)]
    except (ValueError, TypeError) as exc:
        raise CompareError(f"{path}: cannot read the questions ({exc})") from None
    if n == ALL or n >= len(items):
        return items
    return sorted(stratified(items, n, seed), key=lambda q: q.id)


def stratified(items: list[QAPair], n: int, seed: int = 0) -> list[QAPair]:
    """``n`` of ``items``, as equal a number of each kind as the kinds have (a kind with fewer
    questions gives its share to the others), each kind's drawn at random with ``seed``.

    >>> qs = [QAPair(f"{k}{i}", "b", k, "test", "?", "!") for k, m in (("A", 1), ("B", 9))
    ...       for i in range(m)]
    >>> sorted(q.kind for q in stratified(qs, 4))
    ['A', 'B', 'B', 'B']
    """
    rng = random.Random(seed)
    by_kind: dict[str, list[QAPair]] = {}
    for item in items:
        by_kind.setdefault(item.kind, []).append(item)
    queues = [rng.sample(group, len(group)) for _, group in sorted(by_kind.items())]
    picked: list[QAPair] = []
    while len(picked) < n and any(queues):
        for queue in queues:  # one of each kind per round: kinds stay equal until one runs out
            if queue and len(picked) < n:
                picked.append(queue.pop())
    return picked


def manual_numbers(demo_dir: Path, blocks: Path | None = None) -> set[str]:
    """The numbers the manual states (a chat answer's other numbers are hallucinated): the
    blocks.jsonl ``blocks`` (an adapter's own manual), else the demo's."""
    from finetune.metrics import known_numbers

    blocks = blocks or demo_dir / "manual" / "blocks.jsonl"
    return known_numbers(json.loads(line)["text"] for line in _lines(blocks))


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise CompareError(f"{path} does not exist: generate the demo corpus with `tunegraph demo`")
    return [line for line in path.read_text("utf-8").splitlines() if line.strip()]


def training_usage(models: TrainedModels) -> dict[str, dict[str, Training]]:
    """What training each approach's models took, from their manifests: the fine-tuned
    assessment's vision-language model; the agentic one's damage model and report-writing
    adapter; the text adapter behind the fine-tuned chat modes and the agent. Seconds are the
    training loops' (:func:`training_seconds`)."""
    from finetune.artifact import read_manifest

    def metrics(directory: Path | None) -> dict:
        manifest = read_manifest(directory) if directory is not None else None
        return manifest.metrics if manifest is not None else {}

    def seconds(*trained: dict) -> float | None:
        parts = [training_seconds(m) for m in trained if m]
        return None if None in parts else round(sum(parts), 1)

    vlm_dir, damage_dir, adapter_dir = models.vision_lm, models.damage_model, models.text_adapter
    vlm, damage, adapter = metrics(vlm_dir), metrics(damage_dir), metrics(adapter_dir)
    vlm_tokens = vlm.get("train_tokens", 0) + vlm.get("align", {}).get("train_tokens", 0)
    text = Training(
        adapter.get("train_tokens", 0),
        0,
        (adapter_dir.name,) if adapter else (),
        seconds(adapter),
    )
    return {
        "assessment": {
            "finetuned": Training(vlm_tokens, 0, (vlm_dir.name,) if vlm else (), seconds(vlm)),
            "agentic": Training(
                text.tokens,
                damage.get("train_images", 0),
                tuple(d.name for d in (damage_dir, adapter_dir) if d is not None),
                seconds(damage, adapter),
            ),
        },
        "chat": {mode: text for mode in ("finetuned", "finetuned-rag", "agent")},
    }


def training_seconds(metrics: dict[str, Any]) -> float | None:
    """Training-loop wall seconds from a manifest's metrics: each stage's units trained over
    its throughput (``train_tokens`` / ``tokens_per_s``, ``train_images`` / ``images_per_s``),
    stages nested as sections (a vision-language model's ``align``) included. Evaluation and
    data preparation are not in it (the trainer keeps them out of its throughput). None when a
    stage has units but no throughput.

    >>> training_seconds({"train_tokens": 1000, "tokens_per_s": 50.0,
    ...                   "align": {"train_tokens": 300, "tokens_per_s": 100.0}})
    23.0
    >>> training_seconds({"train_images": 900}) is None
    True
    """
    total = 0.0
    for key, value in metrics.items():
        if isinstance(value, dict):
            stage = training_seconds(value)
            if stage is None:
                return None
            total += stage
        elif key in ("train_tokens", "train_images") and value:
            rate = metrics.get(f"{key.removeprefix('train_')}_per_s")
            if not rate:
                return None
            total += value / rate
    return total
