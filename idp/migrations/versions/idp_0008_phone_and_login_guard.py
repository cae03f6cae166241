"""Phone confirmation and the login guard: when an account's mobile number was last confirmed by a text code,
and the proof-of-work challenges already spent at the login form (single use, kept until they expire).

Accounts registered before keep a number that was never confirmed (``phone_confirmed_at`` NULL): they can
confirm it on the account page before SMS login or recovery work for them.

Revision ID: idp_0008_phone_and_login_guard
Revises: idp_0007_privacy
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "idp_0008_phone_and_login_guard"
down_revision = "idp_0007_privacy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite has it): a batch operation would copy idp_accounts into a new table and drop
    # the old one, which the foreign keys of every table pointing at accounts refuse on a database with rows.
    op.add_column("idp_accounts", sa.Column("phone_confirmed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "idp_pow_spent",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idp_pow_spent")),
    )
    op.create_index(op.f("ix_idp_pow_spent_expires_at"), "idp_pow_spent", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_idp_pow_spent_expires_at"), table_name="idp_pow_spent")
    op.drop_table("idp_pow_spent")
    op.drop_column("idp_accounts", "phone_confirmed_at")  # SQLite 3.35+ drops a column in place
