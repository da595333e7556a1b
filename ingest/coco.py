"""COCO damage annotations -> validated :class:`DamageExample` records.

Checks: duplicate image and annotation ids, annotations that point at unknown images or
categories, categories that are not CarDD's six damage types, image files that are missing or
not readable images, boxes that leave the image. Each problem is reported with the item's id;
a bad annotation is skipped, and an image with a problem is skipped with its annotations.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.taxonomy import DAMAGE_TYPES, SEVERITIES


class CocoError(ValueError):
    """The annotation file as a whole is unusable; the message names the file and the fix."""


@dataclass(frozen=True)
class DamageAnnotation:
    type: str
    bbox: tuple[float, float, float, float]  # x, y, w, h in pixels
    part: str | None = None
    severity: str | None = None
    segmentation: tuple[tuple[float, ...], ...] = ()


@dataclass(frozen=True)
class DamageExample:
    image_id: int
    path: Path
    width: int
    height: int
    damages: tuple[DamageAnnotation, ...]
    severity: str | None = None
    part: str | None = None
    cost: float | None = None
    view: str | None = None


@dataclass
class CocoReport:
    source: str
    examples: list[DamageExample] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ingested": len(self.examples),
            "annotations": sum(len(e.damages) for e in self.examples),
            "rejected": self.problems,
        }


def normalise_category(name: str) -> str:
    """CarDD writes 'glass shatter'; tunegraph's type is ``glass_shatter``.

    >>> normalise_category("Glass Shatter")
    'glass_shatter'
    """
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def read_coco(path: Path, images_dir: Path | None = None, check_images: bool = True) -> CocoReport:
    """Validate a COCO file; image paths resolve against ``images_dir`` (default: its folder)."""
    if not path.is_file():
        raise CocoError(f"{path}: no such file (pass the annotations .json file).")
    try:
        data = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CocoError(f"{path}: not valid UTF-8 JSON ({exc}).") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise CocoError(
            f"{path}: a COCO file needs 'images', 'annotations' and 'categories' lists."
        )
    images_dir = (images_dir or path.parent).resolve()
    report = CocoReport(str(path))
    for key in ("images", "annotations", "categories"):
        bad = next((i for i, item in enumerate(data[key]) if not isinstance(item, dict)), None)
        if bad is not None:
            raise CocoError(f"{path}: {key}[{bad}] is not an object; COCO lists hold objects.")
        missing = next((i for i, item in enumerate(data[key]) if "id" not in item), None)
        if missing is not None:
            raise CocoError(f"{path}: {key}[{missing}] has no 'id'.")

    categories: dict[int, str] = {}
    for category in data["categories"]:
        name = normalise_category(str(category.get("name", "")))
        if name not in DAMAGE_TYPES:
            raise CocoError(
                f"{path}: category {category.get('id')} {category.get('name')!r} is not a damage "
                f"type tunegraph knows ({', '.join(DAMAGE_TYPES)}); rename or drop it."
            )
        categories[category["id"]] = name

    images: dict[int, dict] = {}
    for image in data["images"]:
        image_id = image.get("id")
        if image_id in images:
            report.problems.append({"image": image_id, "reason": "duplicate image id"})
            images[image_id] = {}  # neither copy can be trusted
            continue
        problem = _image_problem(image, images_dir, check_images)
        if problem:
            report.problems.append({"image": image_id, "reason": problem})
            images[image_id] = {}
        else:
            images[image_id] = image

    damages: dict[int, list[DamageAnnotation]] = {}
    seen: set[Any] = set()
    for ann in data["annotations"]:
        ann_id = ann.get("id")
        problem = None
        if ann_id in seen:
            problem = "duplicate annotation id"
        elif ann.get("image_id") not in images:
            problem = f"image_id {ann.get('image_id')} is not in 'images'"
        elif ann.get("category_id") not in categories:
            problem = f"category_id {ann.get('category_id')} is not in 'categories'"
        elif images[ann["image_id"]]:
            problem = _box_problem(ann.get("bbox"), images[ann["image_id"]])
        seen.add(ann_id)
        if problem:
            report.problems.append({"annotation": ann_id, "reason": problem})
            continue
        if not images[ann["image_id"]]:
            continue  # the image itself was rejected above
        severity = ann.get("severity")
        damages.setdefault(ann["image_id"], []).append(
            DamageAnnotation(
                type=categories[ann["category_id"]],
                bbox=tuple(float(v) for v in ann["bbox"]),
                part=ann.get("part"),
                severity=severity if severity in SEVERITIES else None,
                segmentation=tuple(
                    tuple(p) for p in ann.get("segmentation") or [] if isinstance(p, list)
                ),
            )
        )

    for image_id, image in images.items():
        if image:
            report.examples.append(
                DamageExample(
                    image_id=image_id,
                    path=images_dir / image["file_name"],
                    width=int(image["width"]),
                    height=int(image["height"]),
                    damages=tuple(damages.get(image_id, ())),
                    severity=image.get("severity"),
                    part=image.get("part"),
                    cost=image.get("cost"),
                    view=image.get("view"),
                )
            )
    return report


def _image_problem(image: dict, images_dir: Path, check_images: bool) -> str | None:
    for key in ("file_name", "width", "height"):
        if key not in image:
            return f"missing {key!r}"
    if not all(isinstance(image[k], int) and image[k] > 0 for k in ("width", "height")):
        return f"width and height must be positive whole numbers, got {image['width']!r}x{image['height']!r}"
    name = image["file_name"]
    if not isinstance(name, str) or not name or "\x00" in name:
        return "file_name must be a file name"
    # images lie in the image folder: an absolute name or `..` must not lead a reader elsewhere
    if not (images_dir / name).resolve().is_relative_to(images_dir):
        return f"file_name {name[:80]!r} leads outside the image folder; give names relative to it"
    if not check_images:
        return None
    file = images_dir / name
    if not file.is_file():
        return f"image file {file} does not exist (pass --images DIR where the files are)"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as picture:
            size = picture.size
            picture.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"{file} is not a readable image ({exc.__class__.__name__})"
    if size != (image["width"], image["height"]):
        return f"{file} is {size[0]}x{size[1]}, but the annotation says {image['width']}x{image['height']}"
    return None


def _box_problem(bbox: Any, image: dict) -> str | None:
    if not (
        isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)
    ):
        return f"bbox {bbox!r} is not [x, y, w, h]"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"bbox {bbox} has no area"
    if x < 0 or y < 0 or x + w > image["width"] + 0.5 or y + h > image["height"] + 0.5:
        return f"bbox {bbox} leaves the {image['width']}x{image['height']} image"
    return None


def dataset_file(datasets_dir: Path, name: str) -> Path:
    """Where the dataset ``name`` goes: ``datasets_dir/NAME.jsonl``. A name that would lead out
    of ``datasets_dir`` (a path separator, a leading dot) is a :class:`CocoError`.

    >>> dataset_file(Path("d"), "demo-damage-train").as_posix()
    'd/demo-damage-train.jsonl'
    >>> dataset_file(Path("d"), "../x")
    Traceback (most recent call last):
    ...
    ingest.coco.CocoError: dataset name '../x': use a plain file name (no '/', '\\' or leading '.')
    """
    if not name or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise CocoError(
            f"dataset name {name!r}: use a plain file name (no '/', '\\' or leading '.')"
        )
    return datasets_dir / f"{name}.jsonl"


def write_dataset(examples: Sequence[DamageExample], path: Path) -> Path:
    """The validated examples as a JSONL dataset for fine-tuning, written all at once (a
    temp file renamed into place)."""
    import dataclasses
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(dataclasses.asdict(example), default=str) + "\n")
    os.replace(tmp, path)
    return path
