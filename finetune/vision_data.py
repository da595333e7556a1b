"""Vision training data: COCO damage examples as model targets and as conversations, and image
tensors with light augmentation.

- The damage model's target is multi-label over (part, damage type) pairs, with a severity and
  a box for each pair present (:class:`DamageLabels`).
- The vision-language model's target is the Assessment fields as JSON, in the conversation
  format of the Llama-4 damage seed (:func:`conversation`).
Pure functions over ``ingest`` records and decoded PIL images.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ingest.coco import DamageExample
from ingest.taxonomy import DAMAGE_TYPES, PART_DAMAGES, PARTS, REPAIR_ACTION, SEVERITIES

ASSESS_INSTRUCTION = (
    "Assess this car damage: damage types, affected parts, severity, estimated repair cost "
    "and repair actions. Answer with JSON."
)
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
# The cost range a photo-only assessment states around its point estimate.
COST_SPREAD = 0.25


@dataclass(frozen=True)
class DamageLabels:
    """The damage model's label space: every (part, damage type) pair the taxonomy allows."""

    pairs: tuple[tuple[str, str], ...] = tuple(
        (part, kind) for part, kinds in PART_DAMAGES.items() for kind in kinds
    )

    @property
    def names(self) -> list[str]:
        return [f"{part}:{kind}" for part, kind in self.pairs]

    def targets(self, example: DamageExample) -> dict[str, list]:
        """presence (0/1), severity index (-100 where absent) and box (x, y, w, h as fractions
        of the image; the union of a pair's boxes) per pair."""
        index = {pair: i for i, pair in enumerate(self.pairs)}
        presence = [0.0] * len(self.pairs)
        severity = [-100] * len(self.pairs)
        boxes = [[0.0, 0.0, 0.0, 0.0] for _ in self.pairs]
        for damage in example.damages:
            i = index.get((damage.part, damage.type))
            if i is None:
                continue  # a pair the taxonomy does not allow (or no part): nothing to learn
            x, y, w, h = damage.bbox
            box = [x / example.width, y / example.height, w / example.width, h / example.height]
            if presence[i]:
                box = _union(boxes[i], box)
            presence[i] = 1.0
            rank = SEVERITIES.index(damage.severity) if damage.severity in SEVERITIES else 1
            severity[i] = max(severity[i], rank)
            boxes[i] = box
        return {"presence": presence, "severity": severity, "boxes": boxes}


def split_damage_logits(logits: Any, pairs: int) -> tuple[Any, Any, Any]:
    """The damage head's output, [batch, pairs * 8] -> presence [b, p], severity [b, p, 3] and
    box [b, p, 4] (pre-sigmoid), for each pair of :class:`DamageLabels`."""
    grid = logits.view(logits.shape[0], pairs, 8)
    return grid[..., 0], grid[..., 1:4], grid[..., 4:8]


def _union(a: Sequence[float], b: Sequence[float]) -> list[float]:
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return [x0, y0, x1 - x0, y1 - y0]


# ---- images as tensors ------------------------------------------------------------------------


def image_tensor(
    picture: Any,
    size: tuple[int, int],
    rng: Any = None,
    *,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
):
    """A normalised float tensor [3, height, width] of a PIL RGB image resized to ``size``
    (width, height). With ``rng`` (a ``random.Random`` or the ``random`` module): a random crop of 88-100 % of the frame and brightness and
    contrast jitter (no flips: a flipped side view swaps front and rear parts). Returns the
    tensor and the crop as (x0, y0, w, h) fractions, so that boxes can follow it."""
    import numpy as np
    import torch

    crop = (0.0, 0.0, 1.0, 1.0)
    if rng is not None:
        scale = rng.uniform(0.88, 1.0)
        crop = (rng.uniform(0, 1 - scale), rng.uniform(0, 1 - scale), scale, scale)
        w, h = picture.size
        picture = picture.crop(
            (
                round(crop[0] * w),
                round(crop[1] * h),
                round((crop[0] + crop[2]) * w),
                round((crop[1] + crop[3]) * h),
            )
        )
    picture = picture.resize(size, resample=_bilinear())
    pixels = np.asarray(picture, dtype=np.float32) / 255.0
    if rng is not None:
        level = pixels.mean()
        pixels = (pixels - level) * rng.uniform(0.8, 1.2) + level * rng.uniform(0.8, 1.2)
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
    mean_t = torch.tensor(list(mean)).view(3, 1, 1)
    std_t = torch.tensor(list(std)).view(3, 1, 1)
    return (tensor - mean_t) / std_t, crop


def _bilinear() -> Any:
    from PIL import Image

    return Image.Resampling.BILINEAR


def crop_boxes(boxes: list[list[float]], crop: tuple[float, float, float, float]) -> list:
    """Boxes (fractions of the full image) in the coordinates of a crop, clipped to it."""
    cx, cy, cw, ch = crop
    moved = []
    for x, y, w, h in boxes:
        x0, y0 = min(max((x - cx) / cw, 0.0), 1.0), min(max((y - cy) / ch, 0.0), 1.0)
        x1, y1 = min(max((x + w - cx) / cw, 0.0), 1.0), min(max((y + h - cy) / ch, 0.0), 1.0)
        moved.append([x0, y0, x1 - x0, y1 - y0])
    return moved


# ---- the Assessment as a training target ---------------------------------------------------


def assessment_target(example: DamageExample) -> dict[str, Any]:
    """The Assessment fields a photo supports, from its annotations: damages (type, part,
    severity), overall severity (the worst damage), a cost range in USD around the cost recorded
    with the photo and the manual's repair action per damaged part. Keys in the order of
    :func:`finetune.vision_lm.model.answer_schema`, whose grammar constrains the model's answers.

    A photo without a recorded cost gets the range 0-0 (no estimate): a model learns prices only
    from the costs its training photos carry, never from a price table."""
    damages = sorted(
        (
            {"type": d.type, "part": d.part, "severity": d.severity or "moderate"}
            for d in example.damages
            if d.part
        ),
        key=_damage_order,
    )
    worst = max((SEVERITIES.index(d["severity"]) for d in damages), default=0)
    cost = example.cost or 0.0
    return {
        "damages": damages,
        "overall_severity": SEVERITIES[worst],
        "cost_estimate": {
            "min": _round_cost(cost * (1 - COST_SPREAD)),
            "max": _round_cost(cost * (1 + COST_SPREAD)),
        },
        "repair_recommendations": [
            {"part": d["part"], "action": REPAIR_ACTION[(d["type"], d["severity"])]}
            for d in damages
        ],
    }


def _damage_order(damage: dict[str, str]) -> tuple[int, int, int]:
    """Damages listed by part, type and severity in taxonomy order (not the annotations'
    order): the same set of damages is always the same answer, so a model learns one order."""
    return (
        PARTS.index(damage["part"]) if damage["part"] in PARTS else len(PARTS),
        DAMAGE_TYPES.index(damage["type"]) if damage["type"] in DAMAGE_TYPES else 0,
        SEVERITIES.index(damage["severity"]),
    )


def _round_cost(value: float) -> int:
    """To the nearest 10 USD.

    >>> _round_cost(1234.5)
    1230
    """
    return int(round(value / 10) * 10)


def caption(example: DamageExample) -> str:
    """The vision-language model's align-stage target: the photo's damages in words.

    >>> from ingest.coco import DamageAnnotation as A, DamageExample
    >>> dents = (A("dent", (0, 0, 1, 1), "hood", "minor"), A("crack", (0, 0, 1, 1), "headlamp"))
    >>> caption(DamageExample(1, "p.png", 10, 10, dents))
    'minor dent on hood; moderate crack on headlamp'
    """
    target = assessment_target(example)
    return (
        "; ".join(f"{d['severity']} {d['type']} on {d['part']}" for d in target["damages"])
        or "no damage"
    )


def cell_words(example: DamageExample, grid: tuple[int, int]) -> list[list[str]]:
    """The words each visual token should point at (the align stage's ``words`` objective): for
    each cell of the ``grid`` (rows, columns; row-major, as the encoder pools its feature map)
    the severity, type and part of the damages whose box centre lies in it, then all the photo's
    damages for the whole-photo token; ``["none"]`` where a cell shows none.

    >>> from ingest.coco import DamageAnnotation as A, DamageExample
    >>> dent = A("dent", (60, 0, 20, 10), "hood", "minor")  # centre (70, 5): top right
    >>> cell_words(DamageExample(1, "p.png", 100, 50, (dent,)), (2, 2))
    [['none'], ['minor', 'dent', 'hood'], ['none'], ['none'], ['minor', 'dent', 'hood']]
    """
    rows, columns = grid
    cells: list[list[str]] = [[] for _ in range(rows * columns)]
    whole: list[str] = []
    for damage in example.damages:
        if not damage.part:
            continue
        words = [damage.severity or "moderate", damage.type, damage.part]
        x, y, w, h = damage.bbox
        column = min(int((x + w / 2) / max(example.width, 1) * columns), columns - 1)
        row = min(int((y + h / 2) / max(example.height, 1) * rows), rows - 1)
        cells[max(row, 0) * columns + max(column, 0)] += words
        whole += words
    return [words or ["none"] for words in [*cells, whole]]


def answer_text(example: DamageExample) -> str:
    """The vision-language model's answer target: :func:`assessment_target` as compact JSON."""
    return json.dumps(assessment_target(example), separators=(",", ":"))


def image_messages(instruction: str, answer: str | None = None) -> list[dict[str, Any]]:
    """The conversation an ``AutoModelForImageTextToText``'s chat template renders: one photo
    and the instruction, then the answer when there is one — the same turns in training and at
    inference.

    >>> [turn["role"] for turn in image_messages("Assess.", "{}")]
    ['user', 'assistant']
    """
    turns: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}
    ]
    if answer is not None:
        turns.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return turns


def conversation(example: DamageExample, instruction: str = ASSESS_INSTRUCTION) -> dict[str, Any]:
    """One COCO image as a chat example (image + instruction -> Assessment fields as JSON)."""
    return {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": str(example.path)}},
                    {"type": "text", "text": instruction},
                ],
            },
            {
                "role": "assistant",
                "content": answer_text(example),
            },
        ]
    }
