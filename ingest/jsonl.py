"""Reading JSON Lines with a per-line report instead of a crash on the first bad line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def read_utf8(path: Path, error: type[Exception]) -> str:
    """The text of a JSONL file; a missing or non-UTF-8 file raises ``error`` naming it."""
    try:
        return Path(path).read_text("utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such file.") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8; re-save it as UTF-8 JSONL.") from None


def parse_lines(text: str) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, record, problem) per non-blank line; record is None when problem is set.

    >>> list(parse_lines('{"a": 1}\\n\\n{oops'))
    [(1, {'a': 1}, None), (3, None, 'malformed JSON: Expecting property name enclosed in double quotes')]
    """
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield number, None, f"malformed JSON: {exc.msg}"
