"""Alembic's entry point for the jobs table: runs on the connection the caller passes in
``config.attributes["connection"]`` (:func:`api.jobs.store.migrate`), never its own URL."""

from alembic import context

from api.jobs.store import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
