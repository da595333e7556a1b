"""Where vision recipes and evaluations get their images: the demo corpus, COCO files,
classification JSONL and class folders, decoded into ``(PIL image, target)`` pairs.

An image that cannot be read is skipped and reported (file and reason); a dataset left with no
image is an error that names it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.classification import (
    LabeledImage,
    read_class_folders,
    read_classification_jsonl,
    sample_and_split,
)
from ingest.coco import CocoError, DamageExample, read_coco
from ingest.images import ImageError, load_image


class VisionDataError(ValueError):
    """The data settings do not lead to usable images; the message names the setting."""


@dataclass
class Split:
    items: list[tuple[Any, Any]] = field(default_factory=list)  # (PIL image, target)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def damage_examples(
    split: str,
    *,
    demo_dir: Path | None = None,
    coco_file: Path | None = None,
    images_dir: Path | None = None,
) -> tuple[list[DamageExample], list[dict[str, Any]]]:
    """A split of the demo corpus (``demo_dir``) or one COCO file, and its rejected items."""
    if coco_file is None:
        if demo_dir is None:
            raise VisionDataError("give a COCO annotations file or the demo corpus folder")
        coco_file = demo_dir / "damage" / "annotations" / f"{split}.json"
        images_dir = demo_dir / "damage" / "images"
        if not coco_file.is_file():
            raise VisionDataError(
                f"{coco_file} is missing: generate the demo corpus with `tunegraph demo` first"
            )
    try:
        report = read_coco(coco_file, images_dir)
    except CocoError as exc:
        raise VisionDataError(str(exc)) from None
    examples = [e for e in report.examples if e.damages]
    if not examples:
        first = f"; first rejected: {report.problems[0]}" if report.problems else ""
        raise VisionDataError(
            f"{coco_file}: no usable image with a damage annotation "
            f"({len(report.problems)} item(s) rejected{first})"
        )
    return examples, report.problems


def classification_examples(
    *, jsonl: Path | None = None, folder: Path | None = None
) -> tuple[list[LabeledImage], list[dict[str, Any]]]:
    if (jsonl is None) == (folder is None):
        raise VisionDataError("give either a classification JSONL file or a folder of classes")
    report = read_classification_jsonl(jsonl) if jsonl else read_class_folders(folder)
    return report.examples, report.problems


def folder_splits(
    folder: Path, per_class: int, seed: int
) -> tuple[list[LabeledImage], list[LabeledImage], list[LabeledImage]]:
    examples, _ = classification_examples(folder=folder)
    return sample_and_split(examples, per_class=per_class, seed=seed)


def decode(
    items: Sequence[Any],
    progress: Callable[..., Any] | None = None,
    desc: str = "images",
    max_side: int | None = None,
) -> Split:
    """Decode ``DamageExample`` s (target: the example) or ``LabeledImage`` s (target: the
    label); unreadable images are skipped and reported. ``max_side``: shrink each picture to
    fit (a model that only needs small inputs does not keep every full photo in memory)."""
    split = Split()
    iterator = progress(items, desc=desc, unit="img") if progress else items
    for item in iterator:
        if isinstance(item, DamageExample):
            name = str(item.path)
        elif item.source.startswith("data:"):
            name = item.origin
        else:
            name = f"{item.origin} ({item.source})"
        try:
            if isinstance(item, DamageExample):
                picture, target = load_image(item.path, name), item
            else:
                picture, target = load_image(item.read_bytes(), name), item.label
            if max_side:
                picture.thumbnail((max_side, max_side))
            split.items.append((picture, target))
        except ImageError as exc:
            split.rejected.append({"image": name, "reason": str(exc)})
        except OSError as exc:
            split.rejected.append({"image": name, "reason": f"cannot be read ({exc})"})
    return split
