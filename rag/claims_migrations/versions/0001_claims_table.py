"""The claims table as it first shipped.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("claim_id", sa.String(64), primary_key=True),
        sa.Column("policy_id", sa.String(64), nullable=False),
        sa.Column("vin", sa.String(17), nullable=False),
        sa.Column("incident_date", sa.Date, nullable=False),
        sa.Column("policy_start", sa.Date, nullable=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("part", sa.String(64), nullable=False),
        sa.Column("damage_type", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("fraud", sa.Boolean, nullable=True),
        sa.Column("photo_paths", sa.Text, nullable=False),
    )
    for column in ("policy_id", "vin", "incident_date", "part"):
        op.create_index(f"ix_claims_{column}", "claims", [column])
