"""The counter desk: a person's visit at a clerk's counter, with the sealed photo of the in-person check.

Revision ID: admin_0003
Revises: admin_0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from core.db import UTCDateTime

revision = "admin_0003"
down_revision = "admin_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_counter_visits",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("clerk_id", sa.String(36), nullable=False),
        sa.Column("department", sa.String(18), nullable=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("resident_id_masked", sa.String(24), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("verified_at", UTCDateTime(), nullable=True),
        sa.Column("documents", sa.String(200), nullable=False),
        sa.Column("photo_type", sa.String(16), nullable=True),
        sa.Column("photo_sha256", sa.String(64), nullable=True),
        sa.Column("photo_key_id", sa.Integer(), nullable=True),
        sa.Column("photo_sealed", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_admin_counter_visits"),
    )
    op.create_index("ix_admin_counter_visits_clerk_id", "admin_counter_visits", ["clerk_id"])


def downgrade() -> None:
    op.drop_index("ix_admin_counter_visits_clerk_id", table_name="admin_counter_visits")
    op.drop_table("admin_counter_visits")
