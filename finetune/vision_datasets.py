"""Where vision recipes and evaluations get their images: the demo corpus, COCO files,
classification JSONL and class folders, decoded into ``(PIL image, target)`` pairs.
:func:`damage_data` and :func:`training_data` assemble a recipe's train and val splits from its
``data:`` settings (:class:`VisionDataArgs`).

An image that cannot be read is skipped and reported (file and reason); a dataset left with no
image is an error that names it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
class VisionDataArgs:
    """A vision recipe's ``data:`` settings."""

    source: Literal["demo", "coco", "jsonl", "folders"] = "demo"
    demo_dir: Path | None = None  # source=demo; default TUNEGRAPH_HOME/demo
    train_file: Path | None = None  # coco: annotations .json; jsonl: OpenAI vision JSONL
    val_file: Path | None = None
    images_dir: Path | None = None  # coco: image folder (default: the annotation file's)
    folder: Path | None = None  # folders: root/<class>/<image>
    per_class: int = 0  # folders: images per class (0: all)
    seed: int = 42


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


@dataclass
class VisionData:
    """A recipe's decoded ``(PIL image, target)`` train and val pairs, every item left out (file
    and reason) and the hash of the training data (the artifact's version)."""

    train: list[tuple[Any, Any]]
    val: list[tuple[Any, Any]]
    rejected: list[dict[str, Any]]
    data_hash: str

    def describe(self, rejected_lines: int = 0) -> list[str]:
        """What a run trains on, for its log: the counts, then the first ``rejected_lines``
        items left out."""
        counts = (
            f"data: {len(self.train)} train / {len(self.val)} val images, "
            f"{len(self.rejected)} rejected"
        )
        return [counts, *(f"  rejected {item}" for item in self.rejected[:rejected_lines])]


def data_hash(items: Sequence[Any]) -> str:
    """A stable hash of the training data's identity (paths and targets).

    >>> data_hash(["a.png"]) == data_hash(["a.png"]) != data_hash(["b.png"])
    True
    """
    digest = hashlib.sha256()
    for item in items:
        digest.update(repr(item).encode())
    return digest.hexdigest()


def damage_data(
    data: VisionDataArgs,
    demo_dir: Path,
    progress: Callable[..., Any] | None = None,
    max_side: int | None = None,
) -> VisionData:
    """The damage photos of the demo corpus (``data.demo_dir``, default ``demo_dir``) or of
    COCO files, decoded (``max_side``: see :func:`decode`)."""
    if data.source not in ("demo", "coco"):
        raise VisionDataError(f"task=damage reads data.source=demo or coco, not {data.source}")
    if data.source == "demo":
        train_ex, bad = damage_examples("train", demo_dir=data.demo_dir or demo_dir)
        val_ex, bad_val = damage_examples("val", demo_dir=data.demo_dir or demo_dir)
    else:
        if data.train_file is None:
            raise VisionDataError("data.source=coco needs data.train_file=ANNOTATIONS.json")
        kwargs = {"images_dir": data.images_dir}
        train_ex, bad = damage_examples("train", coco_file=data.train_file, **kwargs)
        val_ex, bad_val = (
            damage_examples("val", coco_file=data.val_file, **kwargs) if data.val_file else ([], [])
        )
    return _decoded(train_ex, val_ex, bad + bad_val, progress, max_side)


def training_data(
    task: str,
    data: VisionDataArgs,
    demo_dir: Path,
    progress: Callable[..., Any] | None = None,
) -> VisionData:
    """An image classifier's data: damage photos (``task="damage"``, :func:`damage_data`) or
    labelled images from classification JSONL or class folders (``task="classify"``)."""
    if task == "damage":
        return damage_data(data, demo_dir, progress)
    rejected: list[dict[str, Any]] = []
    if data.source == "folders":
        if data.folder is None:
            raise VisionDataError("data.source=folders needs data.folder=DIR")
        train_ex, val_ex, _ = folder_splits(data.folder, data.per_class, data.seed)
    elif data.source == "jsonl":
        if data.train_file is None:
            raise VisionDataError("task=classify needs --train TRAIN.jsonl (data.train_file)")
        train_ex, rejected = classification_examples(jsonl=data.train_file)
        val_ex = []
        if data.val_file:
            val_ex, bad_val = classification_examples(jsonl=data.val_file)
            rejected += bad_val
    else:
        raise VisionDataError("task=classify reads data.source=jsonl or folders")
    return _decoded(train_ex, val_ex, rejected, progress)


def _decoded(
    train_examples: Sequence[Any],
    val_examples: Sequence[Any],
    rejected: list[dict[str, Any]],
    progress: Callable[..., Any] | None,
    max_side: int | None = None,
) -> VisionData:
    train = decode(train_examples, progress, "train images", max_side)
    val = decode(val_examples, progress, "val images", max_side)
    if not train.items:
        raise VisionDataError("no training image could be read")
    # the hash names the images (paths or data URLs) and their targets, not only the labels
    return VisionData(
        train.items,
        val.items,
        [*rejected, *train.rejected, *val.rejected],
        data_hash(train_examples),
    )
