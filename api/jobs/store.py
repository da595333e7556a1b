"""The ``jobs`` table: every background job's state, progress, log tail and result.

SQLAlchemy over the settings' database (SQLite by default), so jobs outlive the process: when a
store opens, jobs that were queued or running in an earlier process are marked ``interrupted``.
Each job has an ``owner``: the id of the API key that created it (``local`` without keys).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Float,
    String,
    Text,
    create_engine,
    func,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from rag.migrations import upgrade

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled", "interrupted")
STATES = ACTIVE + FINISHED
LOCAL = "local"  # the owner of jobs created without API keys


class _Base(DeclarativeBase):
    pass


class JobRow(_Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(40), index=True, default=LOCAL)
    state: Mapped[str] = mapped_column(String(16), index=True)
    params: Mapped[str] = mapped_column(Text, default="{}")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    log: Mapped[str] = mapped_column(Text, default="[]")
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # set every few seconds by the queue worker running the job (api/jobs/queue.py)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)


MIGRATIONS = Path(__file__).with_name("migrations")  # Alembic's scripts for this table
VERSION_TABLE = "tunegraph_jobs_version"  # the jobs table's own: the claims share the database
# The revision a table from before migrations matches, by the newest column it has.
_UNVERSIONED = (("heartbeat_at", "0002"), ("id", "0001"))


@dataclass
class Job:
    """A job as the API shows it."""

    id: str
    kind: str
    state: str
    params: dict[str, Any]
    owner: str = LOCAL
    progress: float = 0.0
    log: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: str | None = None
    cancel_requested: bool = False
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def from_row(cls, row: JobRow) -> Job:
        return cls(
            id=row.id,
            kind=row.kind,
            state=row.state,
            params=json.loads(row.params),
            owner=row.owner,
            progress=row.progress,
            log=json.loads(row.log),
            result=json.loads(row.result) if row.result is not None else None,
            error=row.error,
            cancel_requested=row.cancel_requested,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )

    def to_json(self) -> dict[str, Any]:
        """The job as the API shows it (its owner's key id stays on the server)."""
        shown = {k: v for k, v in self.__dict__.items() if k != "owner"}
        return {"object": "job", **shown}


class JobStore:
    """The jobs table at ``url``. ``interrupt_leftovers``: this process ran every job (local
    execution), so jobs still queued or running from an earlier process are marked at once;
    with a task queue the workers run them, and a job whose worker stopped is found by its
    heartbeat instead (:meth:`reap_stale`)."""

    def __init__(self, url: str, interrupt_leftovers: bool = True) -> None:
        # SQLite: wait for a concurrent writer (the claims ingest, another job) instead of failing
        connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
        self.engine: Engine = create_engine(url, connect_args=connect_args)
        migrate(self.engine)
        self.interrupted = self._interrupt_leftovers() if interrupt_leftovers else 0

    def reap_stale(self, stale_after_s: float) -> int:
        """Mark running jobs whose worker has sent no heartbeat for ``stale_after_s`` as
        failed (the worker died or lost the database); how many."""
        with Session(self.engine) as session, session.begin():
            return session.execute(
                update(JobRow)
                .where(JobRow.state == "running")
                .where(JobRow.heartbeat_at.is_not(None))
                .where(JobRow.heartbeat_at < time.time() - stale_after_s)
                .values(
                    state="failed",
                    finished_at=time.time(),
                    error=f"the worker running this job stopped (no sign of it for "
                    f"{stale_after_s:g} s); submit it again",
                )
            ).rowcount

    def _interrupt_leftovers(self) -> int:
        """Jobs a previous process left queued or running: it died, so they never finish."""
        with Session(self.engine) as session, session.begin():
            result = session.execute(
                update(JobRow)
                .where(JobRow.state.in_(ACTIVE))
                .values(
                    state="interrupted",
                    finished_at=time.time(),
                    error="the server stopped while this job was queued or running; submit "
                    "it again",
                )
            )
            return result.rowcount

    def add(self, job: Job) -> None:
        with Session(self.engine) as session, session.begin():
            session.add(
                JobRow(
                    id=job.id,
                    kind=job.kind,
                    owner=job.owner,
                    state=job.state,
                    params=json.dumps(job.params),
                    progress=job.progress,
                    log=json.dumps(job.log),
                    created_at=job.created_at,
                )
            )

    def update(self, job_id: str, only_if_state: str | None = None, **values: Any) -> bool:
        """Set columns of one job (only while it is in ``only_if_state``, when given); whether
        it changed. ``params``, ``log`` and ``result`` are given as JSON values."""
        for name in ("params", "log", "result"):
            if name in values and values[name] is not None:
                values[name] = json.dumps(values[name], default=str)
        query = update(JobRow).where(JobRow.id == job_id)
        if only_if_state is not None:
            query = query.where(JobRow.state == only_if_state)
        with Session(self.engine) as session, session.begin():
            return session.execute(query.values(**values)).rowcount > 0

    def cancel_requested(self, job_id: str) -> bool:
        """Whether a cancel was asked for (one column: what a worker reads every second)."""
        with Session(self.engine) as session:
            query = select(JobRow.cancel_requested).where(JobRow.id == job_id)
            return bool(session.scalar(query))

    def get(self, job_id: str) -> Job | None:
        with Session(self.engine) as session:
            row = session.get(JobRow, job_id)
            return Job.from_row(row) if row else None

    def list(
        self, limit: int = 50, state: str | None = None, owner: str | None = None
    ) -> list[Job]:
        """The newest ``limit`` jobs, of one ``state`` and one ``owner`` when given."""
        query = select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
        if state:
            query = query.where(JobRow.state == state)
        if owner is not None:
            query = query.where(JobRow.owner == owner)
        with Session(self.engine) as session:
            return [Job.from_row(row) for row in session.scalars(query)]

    def counts(self) -> dict[str, int]:
        """Jobs per state (every state, zeros included)."""
        with Session(self.engine) as session:
            found = dict(
                session.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all()
            )
        return {state: found.get(state, 0) for state in STATES}

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))


def migrate(engine: Engine) -> None:
    """Bring the jobs table to the newest revision (:mod:`rag.migrations`)."""
    upgrade(engine, MIGRATIONS, "jobs", VERSION_TABLE, _UNVERSIONED)
