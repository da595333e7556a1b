"""Where a job may read and write: its owner's uploads, the data root's shared inputs (demo
corpus, datasets), the input roots; and outputs only inside the data root.

A job names files in its parameters, in its config overrides and inside its config file. Each
is resolved (``..`` and links followed) before anything is read, and must lie under

- the owner's upload folder (``TUNEGRAPH_HOME/uploads/<owner>``), where a relative path
  starts: ``manuals/brakes.pdf`` is a file sent with ``POST /v1/files``;
- the data root's shared inputs: the demo corpus (``demo/``) and the datasets ingested from
  COCO files (``datasets/``) — not the rest of it (other keys' uploads and reports, models,
  the database);
- a folder of ``TUNEGRAPH_INPUT_ROOTS`` (empty by default; none may contain the data root);
- for a ``config`` parameter only, the configs shipped with tunegraph, named as in the
  repository's ``configs/`` folder (``configs/text/smollm2_quick.yaml``).

Outputs go under the data root only: a folder a job names (a vision model's ``out``) is a plain
name inside its kind's folder, and names (of runs, adapters, datasets, reports) are plain names,
never paths. A refusal names the parameter and says where files may be; it says nothing
about the file itself (not whether it exists), so a caller learns nothing outside the roots.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from api.settings import Settings
from finetune.config import ConfigError, shipped_config

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# config fields that name a model or a folder: a value that looks like a path is confined
_PATH_LIKE = re.compile(r"^[/~]|(^|[/\\])\.\.([/\\]|$)|\\|\x00")


class OutsideRoots(ValueError):
    """A job names a file outside the folders it may use; the message says which folders."""


@dataclass(frozen=True)
class Roots:
    """The folders one owner's jobs may use."""

    home: Path
    owner: str
    inputs: tuple[Path, ...] = ()

    @classmethod
    def of(cls, settings: Settings, owner: str) -> Roots:
        return cls(
            settings.home.resolve(),
            owner,
            tuple(Path(root).expanduser().resolve() for root in settings.input_roots),
        )

    @property
    def uploads(self) -> Path:
        """The owner's upload folder: where relative paths start."""
        return self.home / "uploads" / self.owner

    def readable(self, raw: str | Path, what: str) -> Path:
        """``raw`` resolved (relative to the upload folder), or :class:`OutsideRoots`."""
        path = self._resolve(raw, what)
        shared = (self.uploads, self.home / "demo", self.home / "datasets")
        if any(path.is_relative_to(root) for root in (*shared, *self.inputs)):
            return path
        raise OutsideRoots(
            f"{what}: {str(raw)!r} is outside the folders jobs may read; send the file with "
            "POST /v1/files and name it by the path that returns"
            + (", or use a folder of TUNEGRAPH_INPUT_ROOTS" if self.inputs else "")
        )

    def output(self, raw: str, what: str, folder: str) -> Path:
        """The folder a job writes, named ``raw`` inside ``home/folder`` (a plain name)."""
        try:
            check_name(raw, what)
        except ValueError as exc:
            raise OutsideRoots(f"{exc}; jobs write only inside the data root's {folder}/") from None
        return self.home / folder / raw

    def config_file(self, raw: str, what: str) -> Path:
        """A config: a shipped one (``configs/...``) or one the owner may read."""
        if not Path(raw).is_absolute() and Path(raw).parts[:1] == ("configs",):
            with contextlib.suppress(ConfigError):  # not shipped: perhaps an upload of that name
                return shipped_config(raw)  # only ever a file inside the shipped configs
        return self.readable(raw, what)

    def _resolve(self, raw: str | Path, what: str) -> Path:
        text = str(raw)
        if not text or "\x00" in text or not text.isprintable() or not _encodable(text):
            raise OutsideRoots(f"{what}: {text[:80]!r} is not a usable file or folder name")
        if text.startswith("~"):  # the libraries below would expand it to a server account's
            raise OutsideRoots(
                f"{what}: {text[:80]!r} is outside the folders jobs may read (a path starting "
                "with '~' is not accepted); give a path relative to your upload folder"
            )
        return (self.uploads / text).resolve()  # an absolute path replaces the upload folder


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: no file can have such a name
        return False
    return True


def check_name(value: Any, what: str) -> None:
    """``ValueError`` unless ``value`` is a plain name (letters, digits, ``_.-``; no path).

    >>> check_name("manual-lora", "name")
    >>> check_name("../x", "name")
    Traceback (most recent call last):
    ...
    ValueError: name: '../x' is not a plain name; use letters, digits, '_', '.' and '-' (at most 64, no path)
    """
    if not isinstance(value, str) or not NAME.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{what}: {value!r} is not a plain name; use letters, digits, '_', '.' and '-' "
            "(at most 64, no path)"
        )


def looks_like_path(value: str) -> bool:
    """Whether a config value would be taken as a path outside where it starts.

    >>> [looks_like_path(v) for v in ("smollm2-135m-instruct", "/etc", "a/../../b", "1e-4")]
    [False, True, True, False]
    """
    return bool(_PATH_LIKE.search(value))


def check_overrides(overrides: list[str], roots: Roots, what: str) -> None:
    """Config overrides (``key=value``): ``name`` must be a plain name, and a value that looks
    like a path must be readable."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            continue  # the config loader names the malformed override
        label = f"{what} {key.strip()}"
        if key.strip() == "name":
            check_name(value.strip(), label)
        elif looks_like_path(value.strip()):
            roots.readable(value.strip(), label)


def check_config(config: Any, roots: Roots, what: str = "config") -> None:
    """Every path of a loaded recipe config (its ``Path`` fields, and model or folder names
    that look like paths) must be readable, and its ``name`` a plain name."""
    if hasattr(config, "name"):
        check_name(config.name, f"{what} name")
    for key, value in _values(config):
        if isinstance(value, Path) or (isinstance(value, str) and looks_like_path(value)):
            roots.readable(value, f"{what} {key}")


def _values(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every field of a config, nested sections included."""
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            yield from _values(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value
