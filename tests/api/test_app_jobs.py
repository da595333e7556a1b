from __future__ import annotations

import json
import re

import pytest
from sqlalchemy.exc import OperationalError

from api.jobs.confine import Roots
from api.jobs.kinds import KINDS, validate
from api.jobs.store import Job, JobStore
from tests.api.conftest import checked, wait_for


def submit(client, kind, **params):
    return client.post("/v1/jobs", json={"kind": kind, "params": params})


def test_a_job_runs_to_completion_with_progress_log_and_result(client):
    response = submit(client, "count", n=4)
    assert response.status_code == 202
    job = response.get_json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["object"] == "job" and job["state"] == "queued" and job["params"] == {"n": 4}
    job = wait_for(client, job["id"], "succeeded")
    assert job["state"] == "succeeded"
    assert job["progress"] == 1.0
    assert job["log"] == ["step 1", "step 2", "step 3", "step 4"]
    assert job["result"] == {"counted": 4}
    assert job["started_at"] >= job["created_at"] and job["finished_at"] >= job["started_at"]
    listed = client.get("/v1/jobs").get_json()
    assert listed["object"] == "list" and [j["id"] for j in listed["data"]] == [job["id"]]


def test_a_running_job_shows_progress_and_can_be_cancelled(client, release):
    job = submit(client, "release").get_json()
    assert release.started.wait(5)
    running = wait_for(client, job["id"], "running")
    assert running["state"] == "running" and running["progress"] == 0.5
    response = client.delete(f"/v1/jobs/{job['id']}")
    assert response.status_code == 202 and response.get_json()["cancel_requested"] is True
    job = wait_for(client, job["id"], "cancelled")
    assert job["state"] == "cancelled" and job["log"][-1] == "stopping"
    again = client.delete(f"/v1/jobs/{job['id']}")
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "job_finished"


def test_a_queued_job_cancelled_before_it_starts_never_runs(make_app, release):
    client = make_app(job_workers=1).test_client()
    blocker = submit(client, "release").get_json()
    assert release.started.wait(5)
    queued = submit(client, "count", n=2).get_json()
    cancelled = client.delete(f"/v1/jobs/{queued['id']}")
    assert cancelled.status_code == 202 and cancelled.get_json()["state"] == "cancelled"
    release.release.set()
    wait_for(client, blocker["id"], "succeeded")
    job = wait_for(client, queued["id"], "cancelled")
    assert job["state"] == "cancelled" and job["log"] == [] and job["result"] is None


def test_a_failing_job_records_the_error(client):
    job = submit(client, "broken").get_json()
    job = wait_for(client, job["id"], "failed")
    assert job["state"] == "failed"
    assert job["error"] == "OSError: disk full"
    assert job["log"] == ["about to fail", "failed: disk full"]


def test_jobs_survive_a_restart_and_running_ones_are_interrupted(make_app):
    first = make_app(job_workers=1)
    client = first.test_client()
    done = submit(client, "count", n=1).get_json()
    wait_for(client, done["id"], "succeeded")
    # What a killed server leaves behind: rows still queued and running (written directly, so
    # that no job of this process is still running when the "next" process starts).
    store = first.extensions["tunegraph"].jobs.store
    first.extensions["tunegraph"].jobs.shutdown()
    store.add(Job(id="job_running", kind="release", state="running", params={}, created_at=2e9))
    store.update("job_running", log=["waiting"], progress=0.5)
    store.add(Job(id="job_queued", kind="count", state="queued", params={}, created_at=2e9 + 1))

    second = make_app().test_client()  # a new process on the same database
    states = {j["id"]: j["state"] for j in second.get("/v1/jobs").get_json()["data"]}
    assert states == {
        done["id"]: "succeeded",
        "job_running": "interrupted",
        "job_queued": "interrupted",
    }
    job = second.get("/v1/jobs/job_running").get_json()
    assert "server stopped" in job["error"] and job["log"] == ["waiting"]
    assert job["progress"] == 0.5 and job["finished_at"] is not None


def test_a_job_submitted_after_shutdown_is_503(app, client):
    app.extensions["tunegraph"].jobs.shutdown()
    response = submit(client, "count")
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "shutting_down" and "server is stopping" in error["message"]
    assert response.headers["Retry-After"] == "30"
    assert client.get("/v1/jobs").get_json()["data"] == []  # nothing left queued


def test_a_failure_in_the_runners_bookkeeping_marks_the_job_failed(app, client, monkeypatch):
    store = app.extensions["tunegraph"].jobs.store
    update = store.update

    def flaky(job_id, only_if_state=None, **values):
        if values.get("state") == "running":
            raise OperationalError("UPDATE jobs", {}, Exception("database is locked"))
        return update(job_id, only_if_state, **values)

    monkeypatch.setattr(store, "update", flaky)
    job = submit(client, "count", n=1).get_json()
    job = wait_for(client, job["id"], "failed")
    assert job["state"] == "failed" and "database is locked" in job["error"]
    assert job["finished_at"] is not None


def test_bad_job_requests(client):
    response = submit(client, "compare")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["param"] == "kind" and error["code"] == "unknown_job_kind"
    assert error["message"] == "unknown job kind 'compare'; use one of broken, count, release"
    response = client.post("/v1/jobs", json={"kind": "count", "params": [1]})
    assert response.get_json()["error"]["param"] == "params"
    response = client.post("/v1/jobs", data="{", content_type="application/json")
    assert response.get_json()["error"]["code"] == "invalid_json"
    response = client.get("/v1/jobs/job_missing")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "job_not_found"
    assert client.delete("/v1/jobs/job_missing").status_code == 404
    assert client.get("/v1/jobs?state=sleeping").status_code == 400
    assert client.get("/v1/jobs?limit=0").get_json()["error"]["param"] == "limit"
    assert client.get("/v1/jobs?limit=²").status_code == 400  # isdigit, yet int() refuses it


def test_jobs_store_counts_every_state(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    counts = store.counts()
    assert set(counts) == {"queued", "running", "succeeded", "failed", "cancelled", "interrupted"}
    assert not any(counts.values())


# ---- the real job kinds: the commands' library functions in a child process -----------------


def test_the_real_kinds_are_the_cli_commands(tmp_path):
    from api.cli.main import main

    assert set(KINDS) == {
        "ingest-manuals", "ingest-claims", "ingest-coco", "finetune-text", "finetune-vision",
        "compare",
    }  # fmt: skip
    for kind in KINDS.values():  # each names a command of the CLI, and a worker function
        group, *rest = kind.command.split()
        command = main.commands[group]
        for word in rest:
            command = command.commands[word]
        module, _, name = kind.function.partition(":")
        assert callable(getattr(__import__(module, fromlist=[name]), name))
    roots = Roots(tmp_path.resolve(), "local")
    roots.uploads.mkdir(parents=True)
    (roots.uploads / "a.pdf").write_bytes(b"%PDF")
    resolved = validate("ingest-manuals", {"paths": ["a.pdf", "."], "force": True}, roots)
    assert resolved["paths"] == [str(roots.uploads / "a.pdf"), str(roots.uploads)]
    validate("finetune-text", {"overrides": ["train.lr=1e-4"], "resume": False}, roots)
    for params, message in [
        ({}, "needs the parameter 'paths'"),
        ({"paths": "a.pdf"}, "must be a list of strings"),
        ({"paths": ["a.pdf"], "depth": 3}, "unknown parameter(s) depth"),
        ({"paths": []}, "name at least one file or folder"),
        ({"paths": ["a.pdf", "nope.pdf"]}, "no such file or folder nope.pdf"),
        ({"paths": ["a.pdf"], "namespace": "../x"}, "parameter 'namespace' of ingest-manuals"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            validate("ingest-manuals", params, roots)
    with pytest.raises(ValueError, match="is not one of damage, classify, assess"):
        validate("finetune-vision", {"task": "segment"}, roots)
    with pytest.raises(ValueError, match="is a file, not a folder"):
        validate("ingest-coco", {"annotations": "x.json", "images": "a.pdf"}, roots)
    for name in ("../outside", "/etc/x", ".hidden", ""):  # the dataset stays under home/datasets
        with pytest.raises(ValueError, match="parameter 'name' of ingest-coco"):
            validate("ingest-coco", {"annotations": "x.json", "name": name}, roots)
    # a compare job bills compute at the hourly prices it is given, as `--cpu-per-hour` does
    assert validate("compare", {"cpu_per_hour": 1, "gpu_per_hour": 0.5}, roots)["cpu_per_hour"] == 1
    for value, message in [("1", "must be a number"), (True, "must be a number"),
                           (float("nan"), "must be a number"), (-1.0, "cpu_per_hour")]:  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(message)):
            validate("compare", {"cpu_per_hour": value}, roots)


def test_an_explicit_price_beats_a_prices_file_which_beats_the_settings():
    from api.composition import compute_billing
    from api.settings import Settings

    settings = Settings(cpu_per_hour=0.3, gpu_per_hour=2.0, device="cpu")
    assert compute_billing(settings) == {
        "cpu_per_hour": 0.3,
        "gpu_per_hour": 2.0,
        "hardware": "cpu",
    }
    from_file = compute_billing(settings, None, 1.5, prices_file=True)
    assert (from_file["cpu_per_hour"], from_file["gpu_per_hour"]) == (None, 1.5)


def test_a_parameter_is_a_value_never_a_flag(tmp_path):
    """Parameters reach the worker function as JSON values: "--help" is a file name."""
    from api.jobs.worker import ingest_claims

    with pytest.raises(Exception, match="--help"):
        ingest_claims({"file": "--help", "date_format": "--json"}, None, print)


@pytest.fixture
def real_client(settings, context):
    from api.server.app import create_app

    app = create_app(settings=settings, context_factory=lambda _: context)
    yield checked(app).test_client()
    app.extensions["tunegraph"].jobs.shutdown()


def test_real_kinds_refuse_bad_params_at_submission(real_client):
    response = submit(real_client, "ingest-claims", files=["a.csv"])
    assert response.status_code == 400
    assert "unknown parameter(s) files" in response.get_json()["error"]["message"]


def test_the_compare_kind_runs_the_compare_function(tmp_path):
    roots = Roots(tmp_path, "local")
    validate("compare", {"name": "t1", "images": 4, "questions": 0, "seed": 7}, roots)
    validate("compare", {}, roots)  # the CLI's defaults
    assert KINDS["compare"].function == "api.jobs.worker:compare"
    assert KINDS["compare"].unit == "comparison"  # the bar the worker moves


def test_the_compare_kind_validates_its_params_at_submission(real_client, settings):
    roots = Roots.of(settings, "local")
    roots.uploads.mkdir(parents=True)
    (roots.uploads / "prices.yaml").write_text("currency: EUR\n")
    for params, message in [
        ({"images": 2, "resamples": 200},
         "unknown parameter(s) resamples for compare; use name, images, questions, prices, seed"),
        ({"images": "2"}, "parameter 'images' of compare must be int"),
        ({"questions": True}, "parameter 'questions' of compare must be int"),
        ({"seed": 1.5}, "parameter 'seed' of compare must be int"),
        ({"images": -1}, "images cannot be negative"),
        ({"name": "../x"}, "name: use 1-64 letters"),
        ({"name": ".hidden"}, "name: use 1-64 letters"),
        ({"prices": "nope.yaml"}, "parameter 'prices' of compare: no file nope.yaml"),
        ({"seed": 2**64}, "parameter 'seed' of compare must be between"),
    ]:  # fmt: skip
        response = submit(real_client, "compare", **params)
        assert response.status_code == 400, params
        error = response.get_json()["error"]
        assert error["param"] == "params" and error["code"] == "invalid_value"
        assert message in error["message"], (params, error["message"])
    assert real_client.get("/v1/jobs").get_json()["data"] == []  # nothing was queued
    # good params pass the check (the command itself is not run here)
    validate("compare", {"name": "t-1.a", "images": 0, "questions": 3, "seed": -2,
                         "prices": "prices.yaml"}, roots)  # fmt: skip


def test_the_spec_documents_the_compare_kind_and_its_report(real_client):
    spec = real_client.get("/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    assert "compare" in schemas["JobRequest"]["properties"]["kind"]["enum"]
    compare = schemas["JobParams-compare"]
    assert list(compare["properties"]) == [
        "name", "images", "questions", "prices", "seed", "cpu_per_hour", "gpu_per_hour",
        "claims", "concurrency",
    ]  # fmt: skip
    assert compare["properties"]["cpu_per_hour"] == {"type": "number"}
    assert compare["additionalProperties"] is False
    assert compare["properties"]["images"] == {
        "type": "integer", "minimum": 0, "maximum": 2**63 - 1
    }  # fmt: skip
    assert schemas["JobParams-ingest-claims"]["required"] == ["file"]
    report = spec["paths"]["/v1/jobs/{job_id}/report"]["get"]
    assert report["parameters"][0]["schema"] == {"enum": ["html", "md", "json"], "default": "html"}
    assert set(report["responses"]["200"]["content"]) == {
        "text/html", "text/markdown", "application/json"
    }  # fmt: skip
    assert {"400", "404", "409"} <= set(report["responses"])


# ---- GET /v1/jobs/<id>/report -------------------------------------------------------------


@pytest.fixture
def compare_client(compare_app):
    return compare_app.test_client()


def finished_compare(client, **params):
    job = submit(client, "compare", **params).get_json()
    job = wait_for(client, job["id"], "succeeded", "failed")
    assert job["state"] == "succeeded", job
    return job


def test_a_compare_jobs_report_downloads_in_each_format(compare_client, settings):
    job = finished_compare(compare_client, name="t1")
    assert job["result"]["out"] == str(settings.runs_dir / "t1")
    url = f"/v1/jobs/{job['id']}/report"
    response = compare_client.get(url)  # html by default
    assert response.status_code == 200
    assert response.content_type == "text/html; charset=utf-8"
    assert response.headers["Content-Disposition"] == "attachment; filename=t1-report.html"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.get_data(as_text=True) == "<h1>tunegraph compare: t1</h1>"
    for fmt, media in (("md", "text/markdown; charset=utf-8"), ("json", "application/json")):
        response = compare_client.get(f"{url}?format={fmt}")
        assert response.status_code == 200 and response.content_type == media
        assert response.headers["Content-Disposition"] == f"attachment; filename=t1-report.{fmt}"
        expected = (settings.runs_dir / "t1" / f"report.{fmt}").read_bytes()
        assert response.get_data() == expected


def test_a_running_compare_job_has_no_report_yet(compare_client, fake_compare):
    job = submit(compare_client, "compare", name="slow", hold=True).get_json()
    assert fake_compare.started.wait(5)
    response = compare_client.get(f"/v1/jobs/{job['id']}/report")
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "job_not_finished" and error["type"] == "conflict_error"
    assert "still running" in error["message"]
    fake_compare.release.set()
    wait_for(compare_client, job["id"], "succeeded")
    assert compare_client.get(f"/v1/jobs/{job['id']}/report").status_code == 200


def test_report_requests_that_cannot_be_served(compare_client):
    response = compare_client.get("/v1/jobs/job_missing/report")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "job_not_found"
    job = finished_compare(compare_client)
    response = compare_client.get(f"/v1/jobs/{job['id']}/report?format=pdf")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["param"] == "format" and error["message"] == (
        "unknown format 'pdf'; use one of html, md, json"
    )
    counted = submit(compare_client, "count", n=1).get_json()
    wait_for(compare_client, counted["id"], "succeeded")
    response = compare_client.get(f"/v1/jobs/{counted['id']}/report")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "not_a_compare_job" and "is a count job" in error["message"]
    failed = submit(compare_client, "compare", fail=True).get_json()
    wait_for(compare_client, failed["id"], "failed")
    response = compare_client.get(f"/v1/jobs/{failed['id']}/report")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "job_not_succeeded"


def test_a_deleted_or_replaced_report_is_404(compare_app, compare_client, settings):
    import os

    job = finished_compare(compare_client, name="gone")
    url = f"/v1/jobs/{job['id']}/report"
    (settings.runs_dir / "gone" / "report.md").unlink()
    response = compare_client.get(url + "?format=md")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "report_not_found"
    assert compare_client.get(url).status_code == 200
    # a later comparison of the same name rewrote the folder: not this job's report any more
    later = job["finished_at"] + 60
    os.utime(settings.runs_dir / "gone" / "report.html", (later, later))
    response = compare_client.get(url)
    assert response.status_code == 404
    assert "replaced by a later comparison named 'gone'" in response.get_json()["error"]["message"]


def test_a_tampered_result_never_serves_a_file_outside_the_runs_folder(
    compare_app, compare_client, settings, tmp_path
):
    job = finished_compare(compare_client, name="ok")
    store = compare_app.extensions["tunegraph"].jobs.store
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "report.html").write_text("SECRET")
    (settings.runs_dir / "report.html").write_text("not a run's report")
    (settings.runs_dir / "link").symlink_to(secret, target_is_directory=True)
    for out in [
        str(secret),  # absolute, elsewhere
        str(settings.runs_dir / ".." / ".." / "secret"),  # inside, then out again
        "../../secret",  # relative to the runs folder
        str(settings.runs_dir / "link"),  # a link out of it
        str(settings.runs_dir),  # the runs folder itself, not a run's folder
        "",
        "ok\x00",
        ["ok"],
        None,
    ]:
        store.update(job["id"], result={"out": out})
        response = compare_client.get(f"/v1/jobs/{job['id']}/report")
        assert response.status_code == 404, out
        assert response.get_json()["error"]["code"] == "report_not_found"
    store.update(job["id"], result={"photos": 2})  # no `out` at all
    assert compare_client.get(f"/v1/jobs/{job['id']}/report").status_code == 404
    store.update(job["id"], result={"out": str(settings.runs_dir / "ok")})
    assert compare_client.get(f"/v1/jobs/{job['id']}/report").status_code == 200


def test_a_real_ingest_job_runs_in_a_child_process(real_client, settings):
    from tests.agents.conftest import photo

    folder = Roots.of(settings, "local").uploads / "coco"  # where POST /v1/files puts it
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(photo(1))
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 256, "height": 192}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 40],
                         "part": "hood", "severity": "moderate"}],
        "categories": [{"id": 1, "name": "dent"}],
    }  # fmt: skip
    (folder / "coco.json").write_text(json.dumps(coco))
    job = submit(real_client, "ingest-coco", annotations="coco/coco.json",
                 name="api-test").get_json()  # fmt: skip
    job = wait_for(real_client, job["id"], "succeeded", "failed", timeout_s=60)
    assert job["state"] == "succeeded", job
    assert job["result"]["ingested"] == 1 and job["result"]["dataset"].endswith("api-test.jsonl")
    assert job["log"][0].startswith("$ tunegraph ingest coco")

    job = submit(real_client, "ingest-coco", annotations="coco/nope.json").get_json()
    job = wait_for(real_client, job["id"], "succeeded", "failed", timeout_s=60)
    assert job["state"] == "failed"
    assert "exited with code 1" in job["error"] and "nope.json" in job["error"]


def test_a_clean_shutdown_interrupts_running_jobs(app, client, release):
    job = submit(client, "release").get_json()
    assert release.started.wait(5)
    app.extensions["tunegraph"].jobs.shutdown()
    job = client.get(f"/v1/jobs/{job['id']}").get_json()
    assert job["state"] == "interrupted" and "server stopped" in job["error"]


def test_a_process_exit_stops_running_jobs_instead_of_waiting_for_them(tmp_path):
    import subprocess
    import sys

    code = f"""
import sys, threading
from pathlib import Path
from api.server.app import create_app
from api.jobs.manager import JobCancelled
from api.settings import Settings

started = threading.Event()

def waits(params, progress, log, cancel):
    started.set()
    while not cancel.wait(0.05):
        pass
    raise JobCancelled

app = create_app(settings=Settings(home=Path({str(tmp_path)!r})), job_kinds={{"waits": waits}},
                 context_factory=lambda _: None)
app.extensions["tunegraph"].jobs.submit("waits", {{}})
assert started.wait(5)
sys.exit(0)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20, capture_output=True)
    (job,) = JobStore(f"sqlite:///{(tmp_path / 'tunegraph.db').resolve()}").list()
    assert job.state == "interrupted" and "server stopped" in job.error
