"""Alembic migrations for tunegraph's tables, one script folder and version table per table
(the claims here, the jobs in ``api/jobs/migrations``): they share one database.

:func:`upgrade` runs when a store opens its database, one process at a time (PostgreSQL: an
advisory lock; SQLite: a lock file beside the database), so an API and its workers starting
together upgrade once. A table from before migrations (made by ``create_all``) is stamped at
the revision its columns match, then upgraded.
"""

from __future__ import annotations

import contextlib
import fcntl
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine


def upgrade(
    engine: Engine,
    scripts: Path,
    table: str,
    version_table: str,
    unversioned: Sequence[tuple[str, str]],
) -> None:
    """Bring ``table`` to the newest revision of ``scripts``. ``unversioned``: (column,
    revision) pairs, newest first; a table without ``version_table`` is stamped at the first
    revision whose column it has."""
    from alembic import command
    from alembic.config import Config

    with _lock(engine, version_table), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            key = zlib.crc32(version_table.encode())
            connection.execute(text(f"SELECT pg_advisory_xact_lock({key})"))
        config = Config()
        config.set_main_option("script_location", str(scripts))
        config.attributes.update(connection=connection, version_table=version_table)
        tables = inspect(connection)
        if tables.has_table(table) and not tables.has_table(version_table):
            columns = {c["name"] for c in tables.get_columns(table)}
            command.stamp(config, next(rev for column, rev in unversioned if column in columns))
        command.upgrade(config, "head")


@contextlib.contextmanager
def _lock(engine: Engine, name: str) -> Iterator[None]:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_env() -> None:
    """The body of each script folder's ``env.py``: migrate on the connection and version
    table :func:`upgrade` passes in, never on a URL of Alembic's own."""
    from alembic import context

    attributes = context.config.attributes
    context.configure(
        connection=attributes["connection"], version_table=attributes["version_table"]
    )
    with context.begin_transaction():
        context.run_migrations()
