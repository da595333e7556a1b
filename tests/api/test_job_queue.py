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


RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


def _rabbitmq_answers() -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", 5672)) == 0


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request) -> str:
    if request.param == "rabbitmq":
        if not _rabbitmq_answers():
            pytest.skip("no RabbitMQ at 127.0.0.1:5672 (the CI machine runs one)")
        return RABBITMQ
    return REDIS


@pytest.fixture
def queued(settings, broker):
    """Settings with a queue of this test's own on the local Redis or RabbitMQ."""
    return settings.replace(
        job_queue=broker, job_queue_name=f"test-{uuid.uuid4().hex}", job_stale_after_s=10
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
    job = wait(api, job["id"], "succeeded", "failed", timeout_s=60)
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


def test_a_broker_that_never_answers_is_a_503_within_seconds(settings, context):
    """A socket that accepts connections and says nothing (a hung Redis): the job is refused
    with 503 and ends failed, instead of the request hanging and the job staying queued."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    hung = settings.replace(job_queue=f"redis://127.0.0.1:{port}/0", job_queue_name="hung")
    app = create_app({"TESTING": True}, settings=hung, context_factory=lambda _: context)
    client = checked(app).test_client()
    _coco(hung)
    started = time.monotonic()
    response = client.post(
        "/v1/jobs", json={"kind": "ingest-coco", "params": {"annotations": "coco/coco.json"}}
    )
    assert time.monotonic() - started < 40
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert response.get_json()["error"]["code"] == "queue_unavailable"
    (job,) = client.get("/v1/jobs").get_json()["data"]
    assert job["state"] == "failed" and job["finished_at"] is not None
    listener.close()


def test_a_job_reaped_while_its_worker_lived_keeps_its_failed_state(settings):
    """A worker taken for dead (no heartbeat: a database hiccup) but still alive must not turn
    the job back to succeeded when it ends; its heartbeat sees it lost the job and stops it."""
    import threading

    from api.jobs.manager import JobManager
    from api.jobs.store import Job, JobStore

    settings.home.mkdir(parents=True)
    store = JobStore(f"sqlite:///{settings.home}/reap.db")
    reaped = threading.Event()

    def slow(params, progress, log, cancel):
        store.update("job_r", heartbeat_at=time.time() - 120)
        assert store.reap_stale(60) == 1  # what the API does meanwhile
        reaped.set()
        return {"done": True}

    manager = JobManager(store, {"slow": slow})
    store.add(Job("job_r", "slow", "queued", {}, created_at=time.time()))
    manager.execute(store.get("job_r"), threading.Event())
    assert reaped.is_set()
    job = store.get("job_r")
    assert job.state == "failed" and "worker running this job stopped" in job.error
    assert job.result is None
