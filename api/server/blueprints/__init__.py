"""One blueprint per resource: chat, assessments, jobs, health (with metrics and the spec)."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from api.server.errors import APIError

MAX_JSON_DEPTH = 64  # arrays and objects inside each other; no request needs more than a few
_TOKEN = re.compile(r'"|[\[{]+|[\]}]+')
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # after the opening quote


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON ``text`` nests arrays and objects deeper than ``limit``, found without
    parsing it (a parser recurses once per level: 100,000 levels exhaust the stack) in one pass.

    >>> json_depth_exceeds('{"a": ["[[[", 1]}', limit=2), json_depth_exceeds("[[[]]]", limit=2)
    (False, True)
    """
    if text.count("[") + text.count("{") <= limit:
        return False  # most bodies: too few brackets to tell apart, no scan needed
    depth, pos = 0, 0
    while token := _TOKEN.search(text, pos):
        pos, found = token.end(), token.group()
        if found == '"':
            string = _STRING_REST.match(text, pos)
            if string is None:
                return False  # an unterminated string: not JSON, which the parser then says
            pos = string.end()
        elif found[0] in "[{":
            depth += len(found)
            if depth > limit:
                return True
        else:
            depth -= len(found)
    return False


def json_body() -> Any:
    """The request's JSON, or a 400 that says what is wrong with it."""
    if not request.is_json:
        raise APIError(
            400, "send a JSON body with Content-Type: application/json", code="invalid_json"
        )
    data = request.get_data(cache=True)
    try:
        # the encodings json.loads accepts: UTF-8, -16 or -32, told apart by the first bytes
        text = data.decode(json.detect_encoding(data), "surrogatepass")
    except UnicodeDecodeError:
        raise APIError(400, "the body is not valid JSON", code="invalid_json") from None
    if json_depth_exceeds(text):
        raise APIError(
            400,
            f"the body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep",
            code="invalid_json",
        )
    body = request.get_json(silent=True)
    if body is None:
        raise APIError(400, "the body is not valid JSON", code="invalid_json")
    return body
