"""Liveness, readiness, Prometheus metrics and the OpenAPI spec (no API key needed)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.server.errors import APIError
from api.server.runtime import overloaded
from api.server.services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Alive: answers at once, touching no model, lock or database (a busy model never delays
    it; the wait queues keep server threads free for it)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Ready when the jobs database answers, the models are loaded and no model's wait queue is
    full; says which models are configured and loaded, and ``queues``: per model, the requests
    ``running`` and ``waiting`` and ``max_waiting``. The first call while the models are not
    loaded starts loading them in the background (503 until that ends), so a load balancer's
    probe also warms the server up. While a queue is full the answer is 503
    ``server_overloaded`` with ``Retry-After`` (as new requests get), so a balancer sends work
    elsewhere. Takes no model's lock."""
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
    if not s.runtime.loaded:
        failed = s.runtime.load_failed
        if not s.runtime.warm_up():
            state = "they are loading in the background"
        elif failed:
            state = "the last load failed (see the server log); loading them again started"
        else:
            state = "loading them started in the background"
        raise APIError(
            503,
            f"the models are not loaded yet: {state}; retry /readyz in a few seconds",
            code="models_loading",
            headers={"Retry-After": "5"},
        )
    if full := s.runtime.overloaded:
        raise overloaded(" and ".join(full), s.settings.max_waiting_requests)
    queues = {name: queue.describe() for name, queue in s.runtime.queues.items()}
    return jsonify({"status": "ready", "models": s.runtime.describe(), "queues": queues})


@bp.get("/metrics")
def metrics() -> Response:
    body, content_type = services().metrics.render()
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi() -> Response:
    from api.server.openapi import spec

    s = services()
    return jsonify(spec(s.settings, sorted(s.jobs.kinds)))
