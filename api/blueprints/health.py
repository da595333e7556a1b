"""Liveness, readiness, Prometheus metrics and the OpenAPI spec (no API key needed)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.app import services
from api.errors import APIError

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Ready when the jobs database answers; says which models are configured and loaded."""
    s = services()
    try:
        s.jobs.store.ping()
    except Exception as exc:
        s.log.warning("readiness: the database does not answer", exc_info=True)
        raise APIError(
            503,
            f"the jobs database does not answer ({type(exc).__name__}); check "
            "TUNEGRAPH_DATABASE_URL",
            code="database_unavailable",
        ) from None
    return jsonify({"status": "ready", "models": s.runtime.describe()})


@bp.get("/metrics")
def metrics() -> Response:
    body, content_type = services().metrics.render()
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi() -> Response:
    from api.openapi import spec

    s = services()
    return jsonify(spec(s.settings, sorted(s.jobs.kinds)))
