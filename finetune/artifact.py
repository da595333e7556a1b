"""A trained artifact on disk: its folder, written all at once, and its manifest.

Every model tunegraph trains (a text adapter, an image model, a vision-language model) and every
merged export carries ``tunegraph-manifest.json``: what it is, which base it was trained on,
which data, with which config, and its final metrics. :class:`Manifest` is that file's one
reader and writer.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

MANIFEST_FILE = "tunegraph-manifest.json"


@dataclass(frozen=True)
class Manifest:
    """What a trained artifact is and where it came from.

    ``kind``: ``text-lora``, ``image-classifier-damage``, ``vision-language-model``, ``merged``...;
    ``extra``: anything a kind adds (the encoder a VLM read, the chat template's hash, the
    adapter a merged model came from), kept at the top level of the JSON file.

    >>> m = Manifest("text-lora", "smollm2-135m-instruct", data_sha256="abc123def")
    >>> Manifest.from_dict(m.to_dict()) == m
    True
    >>> m.version
    'abc123de'
    """

    kind: str
    base_model: str = ""
    data_sha256: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """A short tag of the training data (``name@version`` in answers and reports)."""
        return self.data_sha256[:8]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {**data.pop("extra"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        extra = {k: v for k, v in data.items() if k not in cls.__dataclass_fields__}
        known.pop("extra", None)
        return cls(**{"kind": "", **known}, extra=extra)

    def write(self, directory: Path) -> None:
        (directory / MANIFEST_FILE).write_text(
            json.dumps(self.to_dict(), indent=2, default=str), "utf-8"
        )


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest in ``directory``, or None when there is none (a folder tunegraph did not
    write, or an artifact from before manifests)."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return None
    return Manifest.from_dict(json.loads(path.read_text("utf-8")))


def library_versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Fill ``target`` all at once: ``write(tmp)`` fills a temp dir beside it, which is then
    renamed into place, so a crash never leaves a half-written folder (and an existing
    ``target`` is replaced only once the new one is complete)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def save_artifact(target: Path, write: Callable[[Path], None], manifest: Manifest) -> None:
    """Write a trained artifact into ``target`` all at once: its files (``write(tmp)``) and
    its manifest, with the library versions it was trained with."""

    def write_all(directory: Path) -> None:
        write(directory)
        replace(manifest, versions=library_versions()).write(directory)

    write_atomically(target, write_all)
