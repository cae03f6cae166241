"""Privacy notice acceptance and account closure (issue 16 item 6).

One row per account: the version of the privacy notice it accepted, and a
closure asked for (due after the cooling-off period), carried out, and the day
until which the closed account's records are kept.

Revision ID: idp_0007_privacy
Revises: idp_0006_device_and_scan_login
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "idp_0007_privacy"
down_revision = "idp_0006_device_and_scan_login"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idp_privacy_states",
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("accepted_version", sa.String(length=32), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closure_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closure_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delete_after", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["idp_accounts.id"], name=op.f("fk_idp_privacy_states_account_id_idp_accounts")),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_idp_privacy_states")),
    )
    op.create_index(op.f("ix_idp_privacy_states_closure_due_at"), "idp_privacy_states", ["closure_due_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_idp_privacy_states_closure_due_at"), table_name="idp_privacy_states")
    op.drop_table("idp_privacy_states")
