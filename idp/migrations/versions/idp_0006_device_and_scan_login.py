"""Kiosks and scan-to-login: RFC 8628 device authorizations and desktop logins confirmed on a phone.

Two new tables, nothing existing changes. Codes and secrets are kept only as SHA-256 hashes.

Revision ID: idp_0006_device_and_scan_login
Revises: idp_0005_login_failures
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "idp_0006_device_and_scan_login"
down_revision = "idp_0005_login_failures"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idp_device_authorizations",
        sa.Column("device_code_hash", sa.String(length=64), nullable=False),
        sa.Column("user_code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("interval", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account_id", sa.String(length=36), nullable=True),
        sa.Column("sid", sa.String(length=64), nullable=True),
        sa.Column("acr", sa.Integer(), nullable=True),
        sa.Column("amr", sa.String(length=100), nullable=True),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("family_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["client_id"], ["idp_clients.client_id"], name=op.f("fk_idp_device_authorizations_client_id_idp_clients")),
        sa.PrimaryKeyConstraint("device_code_hash", name=op.f("pk_idp_device_authorizations")),
        sa.UniqueConstraint("user_code_hash", name=op.f("uq_idp_device_authorizations_user_code_hash")),
    )
    op.create_index(op.f("ix_idp_device_authorizations_client_id"), "idp_device_authorizations", ["client_id"])
    op.create_index(op.f("ix_idp_device_authorizations_expires_at"), "idp_device_authorizations", ["expires_at"])
    op.create_table(
        "idp_scan_logins",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("browser_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("next_url", sa.String(length=400), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("desktop_ip", sa.String(length=45), nullable=False),
        sa.Column("desktop_user_agent", sa.String(length=200), nullable=False),
        sa.Column("phone_sid", sa.String(length=64), nullable=True),
        sa.Column("account_id", sa.String(length=36), nullable=True),
        sa.Column("acr", sa.Integer(), nullable=True),
        sa.Column("amr", sa.String(length=100), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("desktop_sid", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_idp_scan_logins")),
        sa.UniqueConstraint("browser_hash", name=op.f("uq_idp_scan_logins_browser_hash")),
    )
    op.create_index(op.f("ix_idp_scan_logins_expires_at"), "idp_scan_logins", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_idp_scan_logins_expires_at"), table_name="idp_scan_logins")
    op.drop_table("idp_scan_logins")
    op.drop_index(op.f("ix_idp_device_authorizations_expires_at"), table_name="idp_device_authorizations")
    op.drop_index(op.f("ix_idp_device_authorizations_client_id"), table_name="idp_device_authorizations")
    op.drop_table("idp_device_authorizations")
