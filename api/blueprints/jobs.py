"""Background jobs: ``POST /v1/jobs`` (202 + the job), ``GET /v1/jobs[/<id>]``,
``DELETE /v1/jobs/<id>`` (cancel). Body of a new job: ``{"kind": ..., "params": {...}}``."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api.blueprints import json_body
from api.errors import APIError
from api.job_manager import JobFinished, JobsStopped, UnknownJobKind
from api.jobs_store import STATES
from api.services import services

bp = Blueprint("jobs", __name__, url_prefix="/v1")
MAX_LIST = 500


def _missing(job_id: str) -> APIError:
    return APIError(404, f"no job {job_id!r}", param="job_id", code="job_not_found")


@bp.post("/jobs")
def create() -> tuple[Response, int, dict[str, str]]:
    body = json_body()
    if not isinstance(body, dict):
        raise APIError(400, "the body must be a JSON object", code="invalid_json")
    kind, params = body.get("kind"), body.get("params", {})
    if not isinstance(params, dict):
        raise APIError(400, "params must be a JSON object", param="params", code="invalid_value")
    manager = services().jobs
    try:
        job = manager.submit(kind if isinstance(kind, str) else "", params)
    except UnknownJobKind as exc:
        raise APIError(400, str(exc), param="kind", code="unknown_job_kind") from None
    except ValueError as exc:
        raise APIError(400, str(exc), param="params", code="invalid_value") from None
    except JobsStopped as exc:
        raise APIError(503, str(exc), code="shutting_down", headers={"Retry-After": "30"}) from None
    return jsonify(job.to_json()), 202, {"Location": f"/v1/jobs/{job.id}"}


@bp.get("/jobs")
def list_jobs() -> Response:
    state = request.args.get("state")
    if state is not None and state not in STATES:
        raise APIError(
            400, f"unknown state {state!r}; use one of {', '.join(STATES)}", param="state"
        )
    limit = request.args.get("limit", "50")
    # isdecimal, not isdigit: int() refuses digits such as '²' that isdigit accepts
    if not limit.isdecimal() or not 1 <= int(limit) <= MAX_LIST:
        raise APIError(400, f"limit must be a whole number from 1 to {MAX_LIST}", param="limit")
    jobs = services().jobs.store.list(int(limit), state)
    return jsonify({"object": "list", "data": [job.to_json() for job in jobs]})


@bp.get("/jobs/<job_id>")
def get(job_id: str) -> Response:
    job = services().jobs.store.get(job_id)
    if job is None:
        raise _missing(job_id)
    return jsonify(job.to_json())


@bp.delete("/jobs/<job_id>")
def cancel(job_id: str) -> tuple[Response, int]:
    try:
        job = services().jobs.cancel(job_id)
    except JobFinished as exc:
        raise APIError(409, str(exc), param="job_id", code="job_finished") from None
    if job is None:
        raise _missing(job_id)
    return jsonify(job.to_json()), 202
