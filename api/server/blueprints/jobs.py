"""Background jobs: ``POST /v1/jobs`` (202 + the job), ``GET /v1/jobs[/<id>]``,
``DELETE /v1/jobs/<id>`` (cancel), ``GET /v1/jobs/<id>/report`` (a finished compare job's
report as a download). Body of a new job: ``{"kind": ..., "params": {...}}``.

A job belongs to the API key that created it: other keys get 404 for it and do not list it;
admin keys (``TUNEGRAPH_ADMIN_KEYS``) see and cancel every job."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, jsonify, request, send_file

from api.jobs.manager import JobFinished, JobsStopped, UnknownJobKind
from api.jobs.queue import QueueUnavailable
from api.jobs.store import ACTIVE, STATES, Job
from api.server.blueprints import json_body
from api.server.errors import APIError
from api.server.protection import caller
from api.server.services import services

bp = Blueprint("jobs", __name__, url_prefix="/v1")
MAX_LIST = 500
# the report files of `tunegraph compare`, by ?format= (text/* is served as UTF-8)
REPORT_TYPES = {"html": "text/html", "md": "text/markdown", "json": "application/json"}
REPORT_KIND = "compare"
# A report written this long after its job finished belongs to a later run of the same name.
REWRITE_SLACK_S = 1.0


def _missing(job_id: str) -> APIError:
    return APIError(404, f"no job {job_id!r}", param="job_id", code="job_not_found")


def _own_job(job_id: str) -> Job:
    """The caller's job ``job_id`` (any job for an admin); 404 for anyone else's."""
    services().jobs.reap()
    job = services().jobs.store.get(job_id)
    who = caller()
    if job is None or not (who.admin or job.owner == who.id):
        raise _missing(job_id)
    return job


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
        job = manager.submit(kind if isinstance(kind, str) else "", params, owner=caller().id)
    except UnknownJobKind as exc:
        raise APIError(400, str(exc), param="kind", code="unknown_job_kind") from None
    except ValueError as exc:
        raise APIError(400, str(exc), param="params", code="invalid_value") from None
    except JobsStopped as exc:
        raise APIError(503, str(exc), code="shutting_down", headers={"Retry-After": "30"}) from None
    except QueueUnavailable as exc:
        raise APIError(
            503, str(exc), code="queue_unavailable", headers={"Retry-After": "30"}
        ) from None
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
    who = caller()
    services().jobs.reap()
    jobs = services().jobs.store.list(int(limit), state, owner=None if who.admin else who.id)
    return jsonify({"object": "list", "data": [job.to_json() for job in jobs]})


@bp.get("/jobs/<job_id>")
def get(job_id: str) -> Response:
    return jsonify(_own_job(job_id).to_json())


@bp.delete("/jobs/<job_id>")
def cancel(job_id: str) -> tuple[Response, int]:
    _own_job(job_id)
    try:
        job = services().jobs.cancel(job_id)
    except JobFinished as exc:
        raise APIError(409, str(exc), param="job_id", code="job_finished") from None
    if job is None:
        raise _missing(job_id)
    return jsonify(job.to_json()), 202


@bp.get("/jobs/<job_id>/report")
def report(job_id: str) -> Response:
    """The report a succeeded compare job wrote, as an attachment (``?format=html|md|json``)."""
    fmt = request.args.get("format", "html")
    if fmt not in REPORT_TYPES:
        raise APIError(
            400, f"unknown format {fmt!r}; use one of {', '.join(REPORT_TYPES)}", param="format"
        )
    s = services()
    job = _own_job(job_id)
    if job.kind != REPORT_KIND:
        raise APIError(
            400,
            f"job {job_id} is a {job.kind} job; only {REPORT_KIND} jobs have a report",
            param="job_id",
            code="not_a_compare_job",
        )
    if job.state in ACTIVE:
        raise APIError(
            409,
            f"job {job_id} is still {job.state}; its report exists once it has succeeded",
            param="job_id",
            code="job_not_finished",
        )
    if job.state != "succeeded":
        raise APIError(
            409,
            f"job {job_id} {job.state}: it wrote no report",
            param="job_id",
            code="job_not_succeeded",
        )
    path = _report_path(job.result, fmt, s.settings.runs_dir)
    if path is None:
        # not the caller's doing: the stored result was changed, or the runs folder moved
        s.log.warning(
            "a compare job's result names no folder inside the runs folder",
            extra={"job_id": job_id},
        )
    if path is None or not path.is_file():
        raise APIError(
            404, f"the report of job {job_id} is gone", param="job_id", code="report_not_found"
        )
    if path.stat().st_mtime > (job.finished_at or 0) + REWRITE_SLACK_S:
        raise APIError(
            404,
            f"the report of job {job_id} was replaced by a later comparison named "
            f"{path.parent.name!r}",
            param="job_id",
            code="report_not_found",
        )
    response = send_file(
        path,
        mimetype=REPORT_TYPES[fmt],
        as_attachment=True,
        download_name=f"{path.parent.name}-report.{fmt}",
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _report_path(result: object, fmt: str, runs_dir: Path) -> Path | None:
    """``report.<fmt>`` in the folder the job's result names (``out``), or None when that
    folder is not inside ``runs_dir`` once links and ``..`` are resolved (a tampered result)."""
    out = result.get("out") if isinstance(result, dict) else None
    if not isinstance(out, str) or not out or "\x00" in out:
        return None
    runs = runs_dir.resolve()
    path = (runs / out / f"report.{fmt}").resolve()  # an absolute `out` replaces `runs`
    return path if path.parent.is_relative_to(runs) and path.parent != runs else None
