"""Reading JSON Lines with a per-line report instead of a crash on the first bad line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


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
