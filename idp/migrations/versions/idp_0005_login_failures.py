"""Wrong passwords for names that have no account are counted and locked like an account's.

The login form then answers an unknown name as it answers a known one, lockout
included (``423`` after five wrong passwords for either), so it does not tell who
has an account. One row per name (a keyed hash of it, never the name), as an
account keeps its own count.

Revision ID: idp_0005_login_failures
Revises: idp_0004_session_secret
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "idp_0005_login_failures"
down_revision = "idp_0004_session_secret"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idp_login_failures",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idp_login_failures")),
    )


def downgrade() -> None:
    op.drop_table("idp_login_failures")
