"""Image classification data: OpenAI vision fine-tuning JSONL and folder-per-class images.

The JSONL is the chat format of OpenAI's vision fine-tuning (one example per line)::

    {"messages": [
      {"role": "system", "content": "You are a classifier. Respond with exactly one of: a, b"},
      {"role": "user", "content": [{"type": "input_text", "text": "Classify the photo."},
                                   {"type": "input_image", "image_url": {"url": "img/1.jpg"}}]},
      {"role": "assistant", "content": [{"type": "output_text", "text": "a"}]}]}

``text`` / ``image_url`` parts work as well as ``input_text`` / ``input_image``; the assistant
label is a string or an ``output_text`` part; an image url is a path relative to the JSONL file,
a local path, a ``file://`` url or a ``data:`` url. Remote urls are refused (tunegraph does not
download). Bad lines are skipped and reported with their line numbers.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.jsonl import parse_lines, read_utf8

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
DEFAULT_INSTRUCTION = "Classify the photo."


class ClassificationError(ValueError):
    """The dataset as a whole is unusable; the message names the file and the fix."""


@dataclass(frozen=True)
class LabeledImage:
    """One image and its class. ``source`` is a local path or a ``data:`` url."""

    source: str
    label: str
    origin: str  # "train.jsonl:12" or the file path, for messages

    def read_bytes(self) -> bytes:
        if self.source.startswith("data:"):
            return _data_url_bytes(self.source)
        return Path(self.source).read_bytes()


@dataclass
class ClassificationReport:
    source: str
    examples: list[LabeledImage] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    system_prompt: str | None = None

    @property
    def classes(self) -> list[str]:
        return sorted({e.label for e in self.examples})

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = defaultdict(int)
        for item in self.examples:
            counts[item.label] += 1
        return {
            "source": self.source,
            "examples": len(self.examples),
            "classes": dict(sorted(counts.items())),
            "rejected": self.problems,
        }


def read_classification_jsonl(path: Path) -> ClassificationReport:
    """Examples of an OpenAI-format vision JSONL file, and the lines that were rejected."""
    path = Path(path)
    text = read_utf8(path, ClassificationError)
    report = ClassificationReport(str(path))
    for number, record, malformed in parse_lines(text):
        try:
            if malformed:
                raise _Problem(malformed)
            source, label, system = _parse_record(record, path.parent)
        except _Problem as problem:
            report.problems.append({"line": number, "reason": str(problem)})
            continue
        report.system_prompt = report.system_prompt or system
        report.examples.append(LabeledImage(source, label, f"{path.name}:{number}"))
    if not report.examples:
        first = report.problems[0] if report.problems else "the file is empty"
        raise ClassificationError(
            f"{path}: no usable example ({len(report.problems)} line(s) rejected, first: {first})."
        )
    return report


def read_class_folders(root: Path) -> ClassificationReport:
    """``root/<class>/<image>`` -> examples labelled by folder name (JPEG, PNG, WebP files)."""
    root = Path(root)
    if not root.is_dir():
        raise ClassificationError(f"{root}: not a folder (expected one sub-folder per class).")
    report = ClassificationReport(str(root))
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                report.examples.append(LabeledImage(str(file), folder.name, str(file)))
            elif file.is_file() and not file.name.startswith("."):
                report.problems.append({"file": str(file), "reason": "not a .jpg/.png/.webp file"})
    if not report.examples:
        raise ClassificationError(
            f"{root}: no images found; put each class's .jpg/.png/.webp files in a sub-folder "
            "named after the class."
        )
    return report


def sample_and_split(
    examples: Sequence[LabeledImage],
    *,
    per_class: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 42,
) -> tuple[list[LabeledImage], list[LabeledImage], list[LabeledImage]]:
    """Deterministic per-class down-sampling (``per_class`` images, 0 = all) and a per-class
    train/val/test split, the method of the dog-breed seed (shuffle with a seed, take the first
    N of each class, split them).

    >>> items = [LabeledImage(f"{c}{i}.jpg", c, "") for c in "ab" for i in range(10)]
    >>> train, val, test = sample_and_split(items, per_class=5, fractions=(0.6, 0.2, 0.2))
    >>> len(train), len(val), len(test), sorted({x.label for x in test})
    (6, 2, 2, ['a', 'b'])
    >>> sample_and_split(items, per_class=5, fractions=(0.6, 0.2, 0.2)) == (train, val, test)
    True
    """
    if abs(sum(fractions) - 1) > 1e-6 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions {fractions} must be >= 0 and add up to 1")
    by_class: dict[str, list[LabeledImage]] = defaultdict(list)
    for item in examples:
        by_class[item.label].append(item)
    train: list[LabeledImage] = []
    val: list[LabeledImage] = []
    test: list[LabeledImage] = []
    for label in sorted(by_class):
        items = sorted(by_class[label], key=lambda x: x.source)
        random.Random(f"{seed}-{label}").shuffle(items)
        if per_class:
            items = items[:per_class]
        n_val = round(len(items) * fractions[1])
        n_test = round(len(items) * fractions[2])
        if len(items) - n_val - n_test < 1:
            n_val = n_test = 0
        test.extend(items[:n_test])
        val.extend(items[n_test : n_test + n_val])
        train.extend(items[n_test + n_val :])
    return train, val, test


def system_prompt(classes: Iterable[str]) -> str:
    return "You are an image classifier. Respond with exactly one of: " + ", ".join(classes)


def write_classification_jsonl(
    examples: Iterable[LabeledImage],
    path: Path,
    classes: Sequence[str],
    instruction: str = DEFAULT_INSTRUCTION,
) -> int:
    """Write examples in the OpenAI vision format; local image paths are written relative to
    the JSONL file when they are below its folder. Returns the number of lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for item in examples:
        url = item.source
        if not url.startswith("data:"):
            try:
                url = Path(url).resolve().relative_to(path.parent.resolve()).as_posix()
            except ValueError:
                url = str(Path(url).resolve())
        record = {
            "messages": [
                {"role": "system", "content": system_prompt(classes)},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": instruction},
                        {"type": "input_image", "image_url": {"url": url}},
                    ],
                },
                {"role": "assistant", "content": [{"type": "output_text", "text": item.label}]},
            ]
        }
        lines.append(json.dumps(record))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in lines), "utf-8")
    tmp.replace(path)
    return len(lines)


# ---- parsing one record -----------------------------------------------------------------------


class _Problem(ValueError):
    pass


def _parse_record(record: Any, base: Path) -> tuple[str, str, str | None]:
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise _Problem('expected an object with a "messages" list')
    messages = [m for m in record["messages"] if isinstance(m, dict)]
    system = next((m.get("content") for m in messages if m.get("role") == "system"), None)
    images = [
        part
        for m in messages
        if m.get("role") == "user" and isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") in ("input_image", "image_url")
    ]
    if len(images) != 1:
        raise _Problem(
            f"the user turn needs exactly one input_image/image_url part, found {len(images)}"
        )
    url = _image_url(images[0])
    assistant = [m for m in messages if m.get("role") == "assistant"]
    if not assistant:
        raise _Problem("no assistant turn: the label is missing")
    label = _text(assistant[-1].get("content")).strip()
    if not label:
        raise _Problem("the assistant turn has no label text")
    return _resolve(url, base), label, system if isinstance(system, str) else None


def _image_url(part: dict) -> str:
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url.strip():
        raise _Problem("the image part has no url")
    return url.strip()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and p.get("type") in ("output_text", "text")
        )
    return ""


def _resolve(url: str, base: Path) -> str:
    if url.startswith("data:"):
        _data_url_bytes(url, problem=_Problem)
        return url
    if url.startswith(("http://", "https://")):
        raise _Problem(
            f"remote image {url[:80]}: tunegraph does not download; save the images next to the "
            "JSONL and use relative paths"
        )
    local = Path(url.removeprefix("file://"))
    path = local if local.is_absolute() else base / local
    # the images lie beside the JSONL (or below it): a path elsewhere is refused unread
    if "\x00" in url or not path.resolve().is_relative_to(base.resolve()):
        raise _Problem(
            f"image {url[:80]!r} is outside the JSONL's folder; keep the images beside the JSONL "
            "and use relative paths"
        )
    if not path.is_file():
        raise _Problem(f"image file {path} does not exist")
    return str(path)


def _data_url_bytes(url: str, problem: type[Exception] = ValueError) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise problem("a data: url must be data:image/...;base64,<data>")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise problem("the data: url's base64 payload is corrupt") from None
