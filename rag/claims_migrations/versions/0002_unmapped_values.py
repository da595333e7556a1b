"""Claims keep the values their file wrote outside tunegraph's vocabulary (``unmapped``, a JSON
object ``{field: value as written}``), so that a later value map can find and fix them.

A table made by ``create_all`` after this column existed already has it: only what is missing
is added.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("claims")}
    if "unmapped" not in present:
        op.add_column("claims", sa.Column("unmapped", sa.Text, nullable=False, server_default="{}"))
