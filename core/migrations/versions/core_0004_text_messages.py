"""One-time codes sent by text message (core_otp_codes) and the development SMS inbox (core_sms_inbox).

Revision ID: core_0004
Revises: core_0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "core_0004"
down_revision = "core_0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "core_otp_codes",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("purpose", sa.String(30), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("used_at", TZ, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_core_otp_codes"),
    )
    op.create_index("ix_core_otp_codes_subject", "core_otp_codes", ["subject", "used_at"])
    op.create_table(
        "core_sms_inbox",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("purpose", sa.String(30), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_core_sms_inbox"),
    )


def downgrade() -> None:
    op.drop_table("core_sms_inbox")
    op.drop_table("core_otp_codes")
