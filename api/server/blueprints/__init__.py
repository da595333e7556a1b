"""One blueprint per resource: chat, assessments, jobs, health (with metrics and the spec)."""

from __future__ import annotations

from typing import Any

from flask import request

from api.server.errors import APIError


def json_body() -> Any:
    """The request's JSON, or a 400 that says what is wrong with it."""
    body = request.get_json(silent=True)
    if body is None:
        if not request.is_json:
            raise APIError(
                400, "send a JSON body with Content-Type: application/json", code="invalid_json"
            )
        raise APIError(400, "the body is not valid JSON", code="invalid_json")
    return body
