"""Jobs on the task queue: submitted over HTTP, run by a separate `tunegraph worker` process
(Celery on the local Redis), cancelled through the database, failed when their worker dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from api.jobs.confine import Roots
from api.server.app import create_app
from tests.agents.conftest import photo
from tests.api.conftest import checked

REDIS = "redis://127.0.0.1:6379/14"


def _redis_answers() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping())
    except Exception:
        return False


pytestmark = pytest.mark.skipif(
    not _redis_answers(), reason="no Redis at 127.0.0.1:6379 (the CI machine runs one)"
)


@pytest.fixture
def queued(settings):
    """Settings with a queue of this test's own on the local Redis."""
    return settings.replace(
        job_queue=REDIS, job_queue_name=f"test-{uuid.uuid4().hex}", job_stale_after_s=3
    )


@pytest.fixture
def api(queued, context):
    app = create_app({"TESTING": True}, settings=queued, context_factory=lambda _: context)
    yield checked(app).test_client()
    app.extensions["tunegraph"].jobs.shutdown()


@pytest.fixture
def start_worker(queued):
    started = []

    def start() -> subprocess.Popen:
        env = {**os.environ, **queued.to_env()}
        worker = subprocess.Popen(
            [sys.executable, "-m", "api.cli.main", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()


def wait(client, job_id: str, *states: str, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while (job := client.get(f"/v1/jobs/{job_id}").get_json())["state"] not in states:
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


def _coco(settings) -> None:
    folder = Roots.of(settings, "local").uploads / "coco"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(photo(1))
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 256, "height": 192}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 40]}],
        "categories": [{"id": 1, "name": "dent"}],
    }
    (folder / "coco.json").write_text(json.dumps(coco))


def test_a_job_submitted_over_http_runs_in_a_separate_worker(api, queued, start_worker):
    _coco(queued)
    job = api.post(
        "/v1/jobs",
        json={"kind": "ingest-coco", "params": {"annotations": "coco/coco.json", "name": "q"}},
    ).get_json()
    assert job["state"] == "queued"
    worker = start_worker()
    job = wait(api, job["id"], "succeeded", "failed")
    assert job["state"] == "succeeded", job
    assert job["result"]["ingested"] == 1 and job["result"]["dataset"].endswith("q.jsonl")
    # the worker process ran it, not the API's own pool
    assert job["log"][0].startswith(f"run by tunegraph worker {worker.pid} on ")
    assert os.getpid() != worker.pid


def test_a_queued_job_cancelled_before_a_worker_takes_it_never_runs(api, queued, start_worker):
    _coco(queued)
    body = {"kind": "ingest-coco", "params": {"annotations": "coco/coco.json", "name": "never"}}
    job = api.post("/v1/jobs", json=body).get_json()
    assert api.delete(f"/v1/jobs/{job['id']}").get_json()["state"] == "cancelled"
    after = api.post("/v1/jobs", json={**body, "params": {**body["params"], "name": "after"}})
    start_worker()
    assert wait(api, after.get_json()["id"], "succeeded", "failed")["state"] == "succeeded"
    assert api.get(f"/v1/jobs/{job['id']}").get_json()["state"] == "cancelled"
    assert not (queued.home / "datasets" / "never.jsonl").exists()


def test_a_worker_killed_mid_job_leaves_it_failed_not_running(api, queued, start_worker):
    folder = Roots.of(queued, "local").uploads / "manuals"
    folder.mkdir(parents=True)
    sections = "".join(f"## Part {i}\n\nBolt {i} torque: {i} Nm.\n\n" for i in range(3000))
    (folder / "big.md").write_text("# Big manual\n\n" + sections)
    job = api.post(
        "/v1/jobs", json={"kind": "ingest-manuals", "params": {"paths": ["manuals"]}}
    ).get_json()
    worker = start_worker()
    wait(api, job["id"], "running", "succeeded", "failed")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    job = wait(api, job["id"], "succeeded", "failed", timeout_s=30)
    assert job["state"] == "failed"
    assert "the worker running this job stopped" in job["error"]


def test_the_worker_needs_a_queue(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "api.cli.main", "worker"],
        env={**os.environ, "TUNEGRAPH_HOME": str(tmp_path), "TUNEGRAPH_JOB_QUEUE": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "set TUNEGRAPH_JOB_QUEUE" in result.stderr
    assert Path(tmp_path).exists()
