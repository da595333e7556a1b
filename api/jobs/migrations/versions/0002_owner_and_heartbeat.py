"""Jobs belong to an API key (``owner``) and queue workers send a heartbeat.

A table from before migrations may already have ``owner`` (it was added at start-up then):
only what is missing is added.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("jobs")}
    if "owner" not in present:
        op.add_column(
            "jobs", sa.Column("owner", sa.String(40), nullable=False, server_default="local")
        )
    if "heartbeat_at" not in present:
        op.add_column("jobs", sa.Column("heartbeat_at", sa.Float, nullable=True))
    indexes = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("jobs")}
    if "ix_jobs_owner" not in indexes:
        op.create_index("ix_jobs_owner", "jobs", ["owner"])
