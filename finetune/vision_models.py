"""Trained image classifiers at inference time.

:class:`ImageClassifier` loads what :mod:`finetune.recipes.image_classifier` saved (the model,
``labels.json``, the manifest) and predicts on PIL images; :class:`DamageDetector` wraps a
``task: damage`` model as the agentic approach's damage tool (``detect(images) -> damages``,
the ``agents.context.DamageModel`` protocol).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finetune.artifact import read_manifest
from finetune.vision_data import image_tensor, split_damage_logits
from ingest.assessment import Damage
from ingest.images import Photo, pictures
from ingest.taxonomy import SEVERITIES


class VisionModelError(ValueError):
    """A model directory that cannot be used; the message names it and the fix."""


class ImageClassifier:
    def __init__(self, model: Any, head: dict[str, Any], name: str) -> None:
        self.model = model.eval()
        self.head = head
        self.name = name
        self.task: str = head["task"]
        self.labels: list[str] = head["labels"]
        self.size = (head["width"], head["height"])

    @classmethod
    def load(cls, directory: Path) -> ImageClassifier:
        from transformers import AutoModelForImageClassification

        directory = Path(directory)
        head_file = directory / "labels.json"
        if not head_file.is_file():
            raise VisionModelError(
                f"{directory}: not an image classifier trained by tunegraph (no labels.json); "
                "train one with `tunegraph finetune vision`"
            )
        head = json.loads(head_file.read_text("utf-8"))
        model = AutoModelForImageClassification.from_pretrained(directory)
        manifest = read_manifest(directory)
        version = manifest.version if manifest else ""
        return cls(model, head, f"{directory.name}@{version}" if version else directory.name)

    def logits(self, pictures: Sequence[Any], batch_size: int = 32) -> Any:
        import torch

        rows = []
        with torch.inference_mode():
            for start in range(0, len(pictures), batch_size):
                pixels = torch.stack(
                    [
                        image_tensor(p, self.size, mean=self.head["mean"], std=self.head["std"])[0]
                        for p in pictures[start : start + batch_size]
                    ]
                )
                rows.append(self.model(pixel_values=pixels).logits)
        return torch.cat(rows)

    def classify(self, pictures: Sequence[Any]) -> list[tuple[str, float]]:
        """(label, probability) per image (``task: classify``)."""
        probabilities = self.logits(pictures).softmax(-1)
        best = probabilities.max(-1)
        return [
            (self.labels[int(i)], float(p)) for p, i in zip(best.values, best.indices, strict=True)
        ]

    def damages(self, pictures: Sequence[Any]) -> list[list[Damage]]:
        """The damages seen in each image (``task: damage``); boxes in that image's pixels.

        Every photo sent for assessment shows damage, so an image where no pair passes the
        threshold gets its most likely one."""
        return self.decode_damages(self.logits(pictures), [p.size for p in pictures])

    def decode_damages(self, logits: Any, sizes: Sequence[tuple[int, int]]) -> list[list[Damage]]:
        """:meth:`damages` from the model's logits for images of ``sizes`` (width, height)."""
        import torch

        pairs = [tuple(name.split(":")) for name in self.labels]
        presence, severity, boxes = split_damage_logits(logits, len(pairs))
        presence, boxes = torch.sigmoid(presence), torch.sigmoid(boxes)
        found = []
        for row, (width, height) in enumerate(sizes):
            chosen = [i for i in range(len(pairs)) if presence[row, i] >= self.head["threshold"]]
            chosen = chosen or [int(presence[row].argmax())]
            image_damages = []
            for i in chosen:
                x, y, w, h = boxes[row, i].tolist()
                part, kind = pairs[i]
                image_damages.append(
                    Damage(
                        type=kind,
                        part=part,
                        severity=SEVERITIES[int(severity[row, i].argmax())],
                        bbox=[
                            round(x * width, 1),
                            round(y * height, 1),
                            round(min(w, 1 - x) * width, 1),
                            round(min(h, 1 - y) * height, 1),
                        ],
                        confidence=round(float(presence[row, i]), 4),
                    )
                )
            found.append(image_damages)
        return found


class DamageDetector:
    """The damage tool of the agentic approach: photos (records or bytes) in, damages out."""

    def __init__(self, classifier: ImageClassifier) -> None:
        if classifier.task != "damage":
            raise VisionModelError(
                f"{classifier.name} is a {classifier.task!r} model; the damage tool needs a "
                "model trained with task: damage"
            )
        self.classifier = classifier
        self.name = classifier.name

    @classmethod
    def load(cls, directory: Path) -> DamageDetector:
        return cls(ImageClassifier.load(directory))

    def detect(self, images: Sequence[Photo | bytes]) -> list[Damage]:
        """Damages over all photos of a claim; a (part, type) seen in several photos counts once,
        with its most confident sighting (``image``: the photo its box is in)."""
        best: dict[tuple[str, str], Damage] = {}
        for index, image_damages in enumerate(self.classifier.damages(pictures(images))):
            for damage in image_damages:
                key = (damage.part, damage.type)
                if key not in best or damage.confidence > best[key].confidence:
                    best[key] = damage.model_copy(update={"image": index})
        return sorted(best.values(), key=lambda d: -d.confidence)
