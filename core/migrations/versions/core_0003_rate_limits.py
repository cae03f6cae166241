"""Rate limits shared by every worker and node (core_rate_limits).

Revision ID: core_0003
Revises: core_0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "core_0003"
down_revision = "core_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "core_rate_limits",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("tat", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_core_rate_limits"),
    )
    op.create_index("ix_core_rate_limits_tat", "core_rate_limits", ["tat"])


def downgrade() -> None:
    op.drop_table("core_rate_limits")
