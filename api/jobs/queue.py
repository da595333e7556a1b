"""Jobs on a task queue: the API stores a job and sends its id to Celery; ``tunegraph worker``
processes, on this machine or others sharing the database and the data root, run it.

Why Celery: the most established Python task queue, and one that takes both brokers the
deployments here have (Redis and RabbitMQ: ``TUNEGRAPH_JOB_QUEUE=redis://...`` or
``amqp://...``). Only the job id travels through the broker; the database stays the one record
of a job (state, progress, log tail, result), written by the worker as the API's own thread
pool writes it locally (:meth:`api.jobs.manager.JobManager.execute`), so ``GET /v1/jobs/<id>``
answers the same either way.

While it runs a job, a worker writes a heartbeat every :data:`HEARTBEAT_S` and reads the job's
``cancel_requested`` flag (``DELETE /v1/jobs/<id>`` sets it). A worker that dies (SIGKILL, a
lost machine) stops the heartbeat: the job is marked failed once ``job_stale_after_s`` pass
(:meth:`~api.jobs.store.JobStore.reap_stale`, run by the API when jobs are read and by every
worker), never left running forever; its child process dies with the worker. Jobs are not
retried: a half-done fine-tune is resumed by submitting it again (the recipes resume from
their checkpoints).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from functools import cache
from typing import Any

from api.jobs.manager import JobKind, JobManager
from api.jobs.store import Job, JobStore
from api.settings import Settings

log = logging.getLogger(__name__)
TASK = "tunegraph.run_job"
HEARTBEAT_S = 1.0  # how often a running job's worker says it is alive and reads cancels


class QueueUnavailable(RuntimeError):
    """The broker did not take the job; the message names it."""


@cache
def celery_app(broker: str, queue: str) -> Any:
    """The Celery app for ``broker`` (one per process): jobs go to ``queue``, one at a time per
    worker, no result backend (results are in the jobs table)."""
    from celery import Celery

    app = Celery("tunegraph", broker=broker, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_ignore_result=True,
        # acknowledged once run: a worker killed before it took the job leaves the message to
        # another (a job already started is not run twice: it is no longer queued)
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a worker takes the next job only when it is free
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # the API's send: a broker that is down or does not answer is reported within seconds
        broker_connection_timeout=5,
        broker_connection_max_retries=1,
        broker_transport_options={"socket_timeout": 5, "socket_connect_timeout": 5},
        task_publish_retry=False,
    )
    app.task(name=TASK, ignore_result=True)(_run_job)
    return app


class QueuedJobManager(JobManager):
    """A :class:`JobManager` whose jobs go to the task queue instead of this process's pool;
    checks, ownership, cancelling and the store work as for local jobs."""

    def __init__(self, store: JobStore, kinds: Mapping[str, JobKind], settings: Settings) -> None:
        super().__init__(store, kinds, workers=1)
        self.settings = settings

    def _dispatch(self, job: Job) -> None:
        app = celery_app(self.settings.job_queue, self.settings.job_queue_name)
        try:
            app.send_task(TASK, args=[job.id], queue=self.settings.job_queue_name)
        except Exception as exc:
            log.exception("the job queue did not take a job")
            self.store.update(
                job.id,
                "queued",
                state="failed",
                error="the job queue did not answer; submit it again",
                finished_at=time.time(),
            )
            raise QueueUnavailable(
                f"the job queue (TUNEGRAPH_JOB_QUEUE) did not take the job ({type(exc).__name__})"
            ) from None

    def reap(self) -> int:
        return self.store.reap_stale(self.settings.job_stale_after_s)


def _run_job(job_id: str) -> None:
    """The task: run the stored job ``job_id`` in this worker process; a failure before the
    job runs (settings, the database) marks it failed instead of leaving it queued."""
    settings = Settings.from_env()
    store = _store(settings.effective_database_url)
    try:
        _run_stored(job_id, settings, store)
    except Exception as exc:
        log.exception("a queued job could not be run")
        store.update(
            job_id,
            "queued",
            state="failed",
            error=f"the worker could not run it: {type(exc).__name__}: {exc}",
            finished_at=time.time(),
        )


def _run_stored(job_id: str, settings: Settings, store: JobStore) -> None:
    from api.jobs.kinds import default_kinds

    store.reap_stale(settings.job_stale_after_s)
    job = store.get(job_id)
    if job is None:  # a message from another deployment sharing the broker (give each
        # deployment its own TUNEGRAPH_JOB_QUEUE_NAME), or a deleted job
        log.warning("no job %s in this worker's database", job_id)
        return
    manager = JobManager(store, default_kinds(settings), workers=1)
    cancel = threading.Event()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a database hiccup: the next beat retries
                if not store.update(job_id, "running", heartbeat_at=time.time()):
                    if store.get(job_id).state != "queued":
                        cancel.set()  # reaped or ended elsewhere: this run no longer owns it
                    continue
                if store.cancel_requested(job_id):
                    cancel.set()

    store.update(job_id, "queued", heartbeat_at=time.time())
    heart = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    heart.start()
    try:
        manager.execute(
            job, cancel, note=f"run by tunegraph worker {os.getpid()} on {socket.gethostname()}"
        )
    finally:
        done.set()
        heart.join()


@cache
def _store(url: str) -> JobStore:
    return JobStore(url, interrupt_leftovers=False)


def run_worker(settings: Settings, concurrency: int = 1) -> None:
    """Run a Celery worker on ``settings``' queue until it is stopped (``tunegraph worker``).

    The solo pool runs one job at a time in this process (each job starts its own child
    process for the work); several jobs at once are several workers."""
    app = celery_app(settings.job_queue, settings.job_queue_name)
    app.conf.broker_connection_max_retries = None  # a worker waits for its broker
    # create or upgrade the jobs table first; the engine is not kept: pool processes forked
    # from this one must not share its connections
    JobStore(settings.effective_database_url, interrupt_leftovers=False).engine.dispose()
    app.worker_main(
        [
            "worker",
            f"--queues={settings.job_queue_name}",
            "--pool=solo" if concurrency == 1 else f"--concurrency={concurrency}",
            f"--loglevel={settings.log_level}",
            f"--hostname=tunegraph-{os.getpid()}@{socket.gethostname()}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
