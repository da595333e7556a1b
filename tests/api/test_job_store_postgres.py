"""The jobs table on PostgreSQL (the local server when it answers): two API processes or
workers writing at once lose nothing, owners filter, a dead worker's job is reaped."""

from __future__ import annotations

import os
import threading
import time

import pytest
from sqlalchemy import text

from api.jobs.store import Job, JobStore

URL = os.environ.get("TUNEGRAPH_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(
    not URL,
    reason="no PostgreSQL answered on 127.0.0.1:5432 and TUNEGRAPH_TEST_POSTGRES_URL is not set",
)


@pytest.fixture
def stores():
    """Two stores on one scratch table: what two API processes (or workers) open."""
    first = JobStore(URL, interrupt_leftovers=False)
    with first.engine.begin() as connection:
        connection.execute(text("DELETE FROM jobs"))
    second = JobStore(URL, interrupt_leftovers=False)
    yield first, second
    for store in (first, second):
        store.engine.dispose()


def test_two_writers_at_once_lose_nothing(stores):
    def write(store: JobStore, owner: str) -> None:
        for i in range(40):
            job_id = f"job_{owner}_{i}"
            store.add(Job(job_id, "count", "queued", {"i": i}, owner=owner, created_at=time.time()))
            assert store.update(job_id, "queued", state="running", started_at=time.time())
            store.update(job_id, log=[f"step {i}"], progress=0.5)
            store.update(job_id, "running", state="succeeded", result={"i": i}, progress=1.0)

    threads = [
        threading.Thread(target=write, args=(s, o)) for s, o in zip(stores, "ab", strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first, second = stores
    assert first.counts()["succeeded"] == 80
    mine = second.list(limit=100, owner="a")
    assert len(mine) == 40 and {job.owner for job in mine} == {"a"}
    assert all(job.result == {"i": job.params["i"]} and job.log for job in mine)


def test_a_running_job_without_heartbeat_is_reaped_by_any_process(stores):
    first, second = stores
    now = time.time()
    for job_id, beat in (("job_dead", now - 120), ("job_alive", now)):
        first.add(Job(job_id, "count", "queued", {}, created_at=now))
        first.update(job_id, "queued", state="running", heartbeat_at=beat)
    assert second.reap_stale(60) == 1
    dead, alive = first.get("job_dead"), first.get("job_alive")
    assert dead.state == "failed" and "worker running this job stopped" in dead.error
    assert alive.state == "running"
