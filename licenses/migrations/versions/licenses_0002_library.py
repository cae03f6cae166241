"""The licence library: issuers, types, data keys, licences, state changes, grants, the access log.

Revision ID: licenses_0002
Revises: licenses_0001
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "licenses_0002"
down_revision = "licenses_0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
GENESIS = "0" * 64


def upgrade() -> None:
    op.create_table(
        "licenses_issuers",
        sa.Column("credit_code", sa.String(18), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("seal_name", sa.String(100), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("credit_code", name="pk_licenses_issuers"),
    )
    op.create_table(
        "licenses_types",
        sa.Column("code", sa.String(21), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("name_en", sa.String(200), nullable=False),
        sa.Column("authority_code", sa.String(18), nullable=False),
        sa.Column("authority_name", sa.String(100), nullable=False),
        sa.Column("holder_kind", sa.String(10), nullable=False),
        sa.Column("face_schema", sa.Text(), nullable=False),
        sa.Column("validity", sa.Text(), nullable=False),
        sa.Column("layout", sa.Text(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_licenses_types"),
    )
    op.create_table(
        "licenses_data_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("wrapping_key_uri", sa.String(400), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_licenses_data_keys"),
    )
    op.create_table(
        "licenses_licences",
        sa.Column("identifier", sa.String(120), nullable=False),
        sa.Column("type_code", sa.String(21), nullable=False),
        sa.Column("issuer_code", sa.String(18), nullable=False),
        sa.Column("serial", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("holder_type", sa.String(3), nullable=False),
        sa.Column("holder_hash", sa.String(64), nullable=False),
        sa.Column("holder_masked", sa.String(24), nullable=False),
        sa.Column("holder_cipher", sa.LargeBinary(), nullable=False),
        sa.Column("holder_name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("state_reason", sa.String(200), nullable=False),
        sa.Column("state_changed_at", TZ, nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("issued_at", TZ, nullable=False),
        sa.Column("issued_by", sa.String(200), nullable=False),
        sa.Column("face_public", sa.Text(), nullable=False),
        sa.Column("face_secret", sa.LargeBinary(), nullable=True),
        sa.Column("data_key_id", sa.Integer(), nullable=True),
        sa.Column("predecessor", sa.String(120), nullable=True),
        sa.Column("successor", sa.String(120), nullable=True),
        sa.Column("requester", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(100), nullable=True),
        sa.Column("document_id", sa.String(40), nullable=True),
        sa.Column("pdf_sha256", sa.String(64), nullable=True),
        sa.Column("pdf", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["type_code"], ["licenses_types.code"], name="fk_licenses_licences_type_code_licenses_types"),
        sa.ForeignKeyConstraint(
            ["issuer_code"], ["licenses_issuers.credit_code"], name="fk_licenses_licences_issuer_code_licenses_issuers"
        ),
        sa.ForeignKeyConstraint(["data_key_id"], ["licenses_data_keys.id"], name="fk_licenses_licences_data_key_id_licenses_data_keys"),
        sa.PrimaryKeyConstraint("identifier", name="pk_licenses_licences"),
        sa.UniqueConstraint("type_code", "issuer_code", "serial", "version", name="uq_licenses_licences_type_code"),
        sa.UniqueConstraint("requester", "request_id", name="uq_licenses_licences_requester"),
    )
    op.create_index("ix_licenses_licences_holder", "licenses_licences", ["holder_hash", "type_code"])
    op.create_index("ix_licenses_licences_state", "licenses_licences", ["state"])
    op.create_table(
        "licenses_state_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("identifier", sa.String(120), nullable=False),
        sa.Column("from_state", sa.String(12), nullable=False),
        sa.Column("to_state", sa.String(12), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["identifier"], ["licenses_licences.identifier"], name="fk_licenses_state_changes_identifier_licenses_licences"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_licenses_state_changes"),
    )
    op.create_index("ix_licenses_state_changes_identifier", "licenses_state_changes", ["identifier"])
    op.create_table(
        "licenses_grants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("type_code", sa.String(21), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("matters", sa.Text(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("revoked_at", TZ, nullable=True),
        sa.ForeignKeyConstraint(["type_code"], ["licenses_types.code"], name="fk_licenses_grants_type_code_licenses_types"),
        sa.PrimaryKeyConstraint("id", name="pk_licenses_grants"),
    )
    op.create_index("ix_licenses_grants_client_id", "licenses_grants", ["client_id"])
    op.create_table(
        "licenses_access_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("holder_hash", sa.String(64), nullable=False),
        sa.Column("identifier", sa.String(120), nullable=False),
        sa.Column("type_code", sa.String(21), nullable=False),
        sa.Column("route", sa.String(10), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("purpose", sa.String(200), nullable=False),
        sa.Column("matter", sa.String(100), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("result", sa.String(20), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_licenses_access_log"),
    )
    op.create_index("ix_licenses_access_log_holder_hash", "licenses_access_log", ["holder_hash"])
    op.create_table(
        "licenses_access_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_licenses_access_head_single_row"),
        sa.PrimaryKeyConstraint("id", name="pk_licenses_access_head"),
    )
    op.execute(sa.text(f"INSERT INTO licenses_access_head (id, last_seq, last_hash) VALUES (1, 0, '{GENESIS}')"))


def downgrade() -> None:
    for table in (
        "licenses_access_head",
        "licenses_access_log",
        "licenses_grants",
        "licenses_state_changes",
        "licenses_licences",
        "licenses_data_keys",
        "licenses_types",
        "licenses_issuers",
    ):
        op.drop_table(table)
