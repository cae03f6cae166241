"""The staff console: role grants, console sessions, four-eyes proposals.

Revision ID: admin_0002
Revises: admin_0001
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from core.db import UTCDateTime

revision = "admin_0002"
down_revision = "admin_0001"
branch_labels = None
depends_on = None  # idp_accounts exists already: the identity provider's branch is upgraded before the console's


def upgrade() -> None:
    op.create_table(
        "admin_role_grants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("department", sa.String(18), nullable=True),
        sa.Column("granted_at", UTCDateTime(), nullable=False),
        sa.Column("granted_by", sa.String(200), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["idp_accounts.id"], name="fk_admin_role_grants_account_id_idp_accounts"),
        sa.PrimaryKeyConstraint("id", name="pk_admin_role_grants"),
    )
    op.create_index("ix_admin_role_grants_account_role", "admin_role_grants", ["account_id", "role"])
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=True),
        sa.Column("acr", sa.Integer(), nullable=False),
        sa.Column("amr", sa.String(100), nullable=False),
        sa.Column("auth_time", UTCDateTime(), nullable=True),
        sa.Column("idp_sid", sa.String(64), nullable=True),
        sa.Column("id_token", sa.Text(), nullable=True),
        sa.Column("login_state", sa.String(64), nullable=True),
        sa.Column("login_nonce", sa.String(64), nullable=True),
        sa.Column("login_verifier", sa.String(128), nullable=True),
        sa.Column("login_next", sa.String(400), nullable=True),
        sa.Column("login_level", sa.Integer(), nullable=True),
        sa.Column("login_fresh", sa.Boolean(), nullable=False),
        sa.Column("login_started_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_admin_sessions"),
    )
    op.create_index("ix_admin_sessions_account_id", "admin_sessions", ["account_id"])
    op.create_index("ix_admin_sessions_expires_at", "admin_sessions", ["expires_at"])
    op.create_table(
        "admin_proposals",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.Column("department", sa.String(18), nullable=True),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("proposed_by", sa.String(36), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("decided_by", sa.String(36), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("decision_reason", sa.String(500), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_admin_proposals"),
    )
    op.create_index("ix_admin_proposals_department", "admin_proposals", ["department"])
    op.create_index("ix_admin_proposals_status", "admin_proposals", ["status"])


def downgrade() -> None:
    op.drop_table("admin_proposals")
    op.drop_table("admin_sessions")
    op.drop_table("admin_role_grants")
