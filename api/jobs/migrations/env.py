"""Alembic's entry point for the jobs table (:func:`rag.migrations.run_env`)."""

from rag.migrations import run_env

run_env()
