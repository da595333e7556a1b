"""Alembic migrations of the jobs table (applied by :func:`api.jobs.store.migrate`)."""
