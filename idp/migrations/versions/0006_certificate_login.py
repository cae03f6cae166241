"""Certificate (USB-key) login and enterprises: login challenges, certificate bindings, enterprises,
agent authorisations, for whom a session acts, and the enterprise behind a code's tokens.

Revision ID: 0006_certificate_login
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_certificate_login"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idp_login_challenges",
        sa.Column("nonce_hash", sa.String(length=64), nullable=False),
        sa.Column("browser_hash", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("nonce_hash", name=op.f("pk_idp_login_challenges")),
    )
    op.create_index(op.f("ix_idp_login_challenges_expires_at"), "idp_login_challenges", ["expires_at"])

    op.create_table(
        "idp_certificate_bindings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("subject_id_hash", sa.String(length=64), nullable=False),
        sa.Column("subject_id_masked", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=400), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=400), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("via", sa.String(length=12), nullable=False),
        sa.Column("bound_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["idp_accounts.id"], name=op.f("fk_idp_certificate_bindings_account_id_idp_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idp_certificate_bindings")),
        sa.UniqueConstraint("fingerprint", "account_id", name="uq_idp_certificate_bindings_fingerprint_account"),
    )
    op.create_index(op.f("ix_idp_certificate_bindings_fingerprint"), "idp_certificate_bindings", ["fingerprint"])
    op.create_index(op.f("ix_idp_certificate_bindings_account_id"), "idp_certificate_bindings", ["account_id"])

    op.create_table(
        "idp_enterprises",
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("representative_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["representative_id"], ["idp_accounts.id"], name=op.f("fk_idp_enterprises_representative_id_idp_accounts")),
        sa.PrimaryKeyConstraint("credit_code", name=op.f("pk_idp_enterprises")),
    )
    op.create_index(op.f("ix_idp_enterprises_representative_id"), "idp_enterprises", ["representative_id"])

    op.create_table(
        "idp_agent_authorisations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("matters", sa.Text(), nullable=False),
        sa.Column("granted_by", sa.String(length=36), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["agent_id"], ["idp_accounts.id"], name=op.f("fk_idp_agent_authorisations_agent_id_idp_accounts")),
        sa.ForeignKeyConstraint(["credit_code"], ["idp_enterprises.credit_code"], name=op.f("fk_idp_agent_authorisations_credit_code_idp_enterprises")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idp_agent_authorisations")),
    )
    op.create_index(op.f("ix_idp_agent_authorisations_credit_code"), "idp_agent_authorisations", ["credit_code"])
    op.create_index(op.f("ix_idp_agent_authorisations_agent_id"), "idp_agent_authorisations", ["agent_id"])

    op.create_table(
        "idp_session_acting",
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("authorisation_id", sa.String(length=36), nullable=True),
        sa.Column("key_proven", sa.Boolean(), nullable=False),
        sa.Column("chosen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["sid"], ["idp_sessions.sid"], name=op.f("fk_idp_session_acting_sid_idp_sessions")),
        sa.PrimaryKeyConstraint("sid", name=op.f("pk_idp_session_acting")),
    )
    op.create_index(op.f("ix_idp_session_acting_credit_code"), "idp_session_acting", ["credit_code"])
    op.create_index(op.f("ix_idp_session_acting_authorisation_id"), "idp_session_acting", ["authorisation_id"])

    op.create_table(
        "idp_acting_grants",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=64), nullable=True),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("org_name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("authorisation_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_idp_acting_grants")),
    )
    op.create_index(op.f("ix_idp_acting_grants_family_id"), "idp_acting_grants", ["family_id"])


def downgrade() -> None:
    op.drop_table("idp_acting_grants")
    op.drop_table("idp_session_acting")
    op.drop_table("idp_agent_authorisations")
    op.drop_table("idp_enterprises")
    op.drop_table("idp_certificate_bindings")
    op.drop_table("idp_login_challenges")
