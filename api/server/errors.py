"""Every 4xx/5xx answer uses OpenAI's error envelope ``{"error": {type, message, param, code}}``.

Handlers cover :class:`APIError` (raised by the blueprints), every Werkzeug ``HTTPException``
(404, 405, 413...) and any other exception, which becomes a 500 with a generic message and the
request id: the traceback goes to the log, never into a response.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g, jsonify
from flask.wrappers import Response
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from api.server.observability import LOGGER

log = logging.getLogger(LOGGER)

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}
_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    414: "uri_too_long",
    431: "headers_too_large",
}


class APIError(Exception):
    """An error answer: status, message for the caller, the offending parameter and a code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return envelope(self.status, self.message, self.param, self.code)


def internal_error(request_id: str | None) -> APIError:
    """The 500 for an unexpected failure: no detail (that goes to the log), only the request id
    to quote when reporting it."""
    return APIError(
        500,
        f"internal error; quote request id {request_id or '-'} when reporting it",
        code="internal_error",
    )


def envelope(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The error body for ``status``; the type follows from the status."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"type": kind, "message": message, "param": param, "code": code}}


def _response(body: dict[str, Any], status: int, headers: dict[str, str]) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers)
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(APIError)
    def api_error(exc: APIError) -> Response:
        return _response(exc.body(), exc.status, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {}
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        message = exc.description or exc.name
        return _response(envelope(status, message, code=_CODES.get(status)), status, headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        request_id = g.get("request_id", "-")
        log.exception("unhandled error", extra={"request_id": request_id})
        error = internal_error(request_id)
        return _response(error.body(), error.status, {})
