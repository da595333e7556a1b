"""Runs background jobs on a small thread pool and keeps their state in the :class:`JobStore`.

A job kind is a callable ``(params, progress, log, cancel) -> result``: ``progress(fraction)``
reports 0..1, ``log(line)`` appends to the job's log tail, ``cancel`` is a
:class:`threading.Event` the kind checks (and stops at) when it is set. A kind may also have a
``check(params)`` method that raises ``ValueError`` for bad parameters, so that a bad request is
refused with 400 instead of queueing a job that can only fail.

A job belongs to the caller that submitted it (``owner``, a key id). While a kind checks or runs
a job, :data:`JOB_OWNER` holds that owner, so that a kind can confine the job to its owner's
files without the protocol growing an argument every kind would have to take.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, Protocol

from api.jobs.store import ACTIVE, FINISHED, LOCAL, Job, JobStore
from api.server.observability import LOGGER

LOG_TAIL = 200  # lines of a job's log that are kept
SAVE_EVERY_S = 0.5  # progress and log are written at most this often (and at the end)
STOPPED = "the server is stopping; submit the job again once it is back"

log = logging.getLogger(LOGGER)
JOB_OWNER: ContextVar[str] = ContextVar("JOB_OWNER", default=LOCAL)


class JobKind(Protocol):
    def __call__(
        self,
        params: dict[str, Any],
        progress: Callable[[float], None],
        log: Callable[[str], None],
        cancel: threading.Event,
    ) -> dict[str, Any]: ...


class JobCancelled(Exception):
    """Raised by a kind that stopped because its cancel event was set."""


class UnknownJobKind(ValueError):
    pass


class JobFinished(ValueError):
    """A finished job cannot be cancelled."""


class JobsStopped(RuntimeError):
    """The manager was shut down (the server is stopping): no new job is accepted."""


class JobManager:
    def __init__(self, store: JobStore, kinds: Mapping[str, JobKind], workers: int = 1) -> None:
        self.store = store
        self.kinds = dict(kinds)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._stopping = False

    def submit(self, kind: str, params: dict[str, Any], owner: str = LOCAL) -> Job:
        """Queue a job of ``owner``; raises :class:`UnknownJobKind` or the kind's own
        ``ValueError``."""
        if kind not in self.kinds:
            valid = ", ".join(sorted(self.kinds)) or "none"
            raise UnknownJobKind(f"unknown job kind {kind!r}; use one of {valid}")
        check = getattr(self.kinds[kind], "check", None)
        if check is not None:
            token = JOB_OWNER.set(owner)
            try:
                check(params)
            finally:
                JOB_OWNER.reset(token)
        if self._stopping:
            raise JobsStopped(STOPPED)
        job = Job(
            id=f"job_{uuid.uuid4().hex}", kind=kind, state="queued", params=params,
            owner=owner, created_at=time.time(),
        )  # fmt: skip
        self.store.add(job)
        self._dispatch(job)
        return job

    def _dispatch(self, job: Job) -> None:
        """Hand a stored, queued job to what runs it: this process's thread pool."""
        with self._lock:  # shutdown() sets _stopping under this lock, then closes the pool
            if not self._stopping:
                self._cancel[job.id] = threading.Event()
                self._pool.submit(self._run, job)
                return
        self.store.update(job.id, "queued", **self._stopped(), finished_at=time.time())
        raise JobsStopped(STOPPED)

    def cancel(self, job_id: str) -> Job | None:
        """Ask a queued or running job to stop; None if there is no such job."""
        job = self.store.get(job_id)
        if job is None:
            return None
        if job.state in FINISHED:
            raise JobFinished(f"job {job_id} has already {job.state}")
        with self._lock:
            event = self._cancel.get(job_id)
        if event is not None:
            event.set()
        self.store.update(job_id, cancel_requested=True)
        # A queued job is cancelled at once (its worker then skips it); a running one when its
        # kind stops.
        self.store.update(job_id, "queued", state="cancelled", finished_at=time.time())
        return self.store.get(job_id)

    def reap(self) -> int:
        """Mark jobs whose runner died as failed (nothing to do here: this process runs them,
        and marks what an earlier one left when its store opens)."""
        return 0

    def shutdown(self) -> None:
        """Stop every job and wait for them (a server's clean exit): they end ``interrupted``."""
        with self._lock:
            self._stopping = True
            for event in self._cancel.values():
                event.set()
        self._pool.shutdown(wait=True, cancel_futures=False)

    def _run(self, job: Job) -> None:
        try:
            self._execute(job)
        except Exception as exc:
            # The runner's own bookkeeping failed (the database, most likely): a job left
            # queued or running would look alive forever.
            log.exception("job runner failed", extra={"job_id": job.id, "kind": job.kind})
            self._mark_failed(job.id, exc)
        finally:
            with self._lock:
                self._cancel.pop(job.id, None)

    def _mark_failed(self, job_id: str, exc: Exception) -> None:
        values = {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
        try:
            for state in ACTIVE:
                self.store.update(job_id, state, **values, finished_at=time.time())
        except Exception:
            # the store is down; it marks the job interrupted when the server starts again
            log.exception("could not mark the job failed", extra={"job_id": job_id})

    def _execute(self, job: Job) -> None:
        with self._lock:
            cancel = self._cancel[job.id]
        self.execute(job, cancel)

    def execute(self, job: Job, cancel: threading.Event, note: str | None = None) -> None:
        """Run a queued job here and record its end; ``cancel`` stops it (this process's pool,
        or a queue worker: :mod:`api.jobs.queue`); ``note`` starts its log."""
        if cancel.is_set():
            self.store.update(job.id, "queued", **self._stopped(), finished_at=time.time())
            return
        if not self.store.update(job.id, "queued", state="running", started_at=time.time()):
            return  # cancelled while it waited
        reporter = _Reporter(self.store, job.id)
        if note:
            reporter.log(note)
        JOB_OWNER.set(job.owner)  # this pool thread's context; set again by its next job
        try:
            result = self.kinds[job.kind](job.params, reporter.progress, reporter.log, cancel)
        except JobCancelled:
            reporter.finish(**self._stopped())
            return
        except Exception as exc:
            log.warning("job failed", extra={"job_id": job.id, "kind": job.kind}, exc_info=True)
            reporter.log(f"failed: {exc}")
            reporter.finish(state="failed", error=f"{type(exc).__name__}: {exc}")
            return
        # A kind that finished although a cancel came in has a result: keep it.
        reporter.finish(state="succeeded", result=result or {}, progress=1.0)

    def _stopped(self) -> dict[str, str]:
        if self._stopping:
            return {"state": "interrupted", "error": "the server stopped; submit the job again"}
        return {"state": "cancelled"}


class _Reporter:
    """Collects a running job's progress and log lines; writes them at most every
    SAVE_EVERY_S, and a last time SAVE_EVERY_S after a burst, so a reader is never further
    behind than that. Writes go out one at a time and none after the final one: a timer or a
    late reader thread must not overwrite a finished job's progress and log."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self.lines: deque[str] = deque(maxlen=LOG_TAIL)
        self.fraction = 0.0
        self.saved = 0.0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # orders the store writes
        self._finished = False

    def progress(self, fraction: float) -> None:
        with self._lock:
            self.fraction = min(1.0, max(0.0, float(fraction)))
        self._save()

    def log(self, line: str) -> None:
        with self._lock:
            self.lines.extend(str(line).splitlines() or [""])
        self._save()

    def _save(self) -> None:
        with self._lock:
            wait = self.saved + SAVE_EVERY_S - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._write)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self._write()

    def _write(self, **extra: Any) -> None:
        with self._writing:
            with self._lock:
                self._timer = None
                if self._finished:
                    return
                self._finished = "finished_at" in extra
                self.saved = time.monotonic()
                values = {"progress": self.fraction, "log": list(self.lines)}
            # the end is written only over a running job: one already ended elsewhere (a
            # queue worker taken for dead and reaped) keeps what it says
            self.store.update(self.job_id, "running" if self._finished else None, **values, **extra)

    def finish(self, **values: Any) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self.fraction = values.pop("progress", self.fraction)
        self._write(finished_at=time.time(), **values)
