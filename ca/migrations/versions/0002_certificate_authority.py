"""Certificate authority: authorities, issued certificates, CRLs, pre-signed OCSP responses, recognised CAs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ca_authorities",
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("parent", sa.String(40), nullable=True),
        sa.Column("key_uri", sa.String(400), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.Column("subject", sa.String(400), nullable=False),
        sa.Column("not_after", TZ, nullable=False),
        sa.Column("crl_number", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["parent"], ["ca_authorities.name"], name="fk_ca_authorities_parent_ca_authorities"),
        sa.PrimaryKeyConstraint("name", name="pk_ca_authorities"),
    )
    op.create_table(
        "ca_certificates",
        sa.Column("serial", sa.String(40), nullable=False),
        sa.Column("authority", sa.String(40), nullable=False),
        sa.Column("profile", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(400), nullable=False),
        sa.Column("subject_id_kind", sa.String(20), nullable=True),
        sa.Column("subject_id_hash", sa.String(64), nullable=True),
        sa.Column("subject_id_masked", sa.String(40), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("not_before", TZ, nullable=False),
        sa.Column("not_after", TZ, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("revoked_at", TZ, nullable=True),
        sa.Column("revocation_reason", sa.String(30), nullable=True),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("key_uri", sa.String(400), nullable=True),
        sa.Column("issued_at", TZ, nullable=False),
        sa.Column("issued_by", sa.String(200), nullable=False),
        sa.ForeignKeyConstraint(["authority"], ["ca_authorities.name"], name="fk_ca_certificates_authority_ca_authorities"),
        sa.PrimaryKeyConstraint("serial", name="pk_ca_certificates"),
        sa.UniqueConstraint("fingerprint", name="uq_ca_certificates_fingerprint"),
    )
    op.create_index("ix_ca_certificates_authority_status", "ca_certificates", ["authority", "status"])
    op.create_index("ix_ca_certificates_subject_id_hash", "ca_certificates", ["subject_id_hash"])
    op.create_index("ix_ca_certificates_not_after", "ca_certificates", ["not_after"])
    op.create_table(
        "ca_crls",
        sa.Column("authority", sa.String(40), nullable=False),
        sa.Column("number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("this_update", TZ, nullable=False),
        sa.Column("next_update", TZ, nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["authority"], ["ca_authorities.name"], name="fk_ca_crls_authority_ca_authorities"),
        sa.PrimaryKeyConstraint("authority", "number", name="pk_ca_crls"),
    )
    op.create_table(
        "ca_ocsp_responses",
        sa.Column("serial", sa.String(40), nullable=False),
        sa.Column("authority", sa.String(40), nullable=False),
        sa.Column("produced_at", TZ, nullable=False),
        sa.Column("next_update", TZ, nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["authority"], ["ca_authorities.name"], name="fk_ca_ocsp_responses_authority_ca_authorities"),
        sa.PrimaryKeyConstraint("serial", name="pk_ca_ocsp_responses"),
    )
    op.create_index("ix_ca_ocsp_responses_next_update", "ca_ocsp_responses", ["next_update"])
    op.create_table(
        "ca_recognised",
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(400), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("how", sa.String(20), nullable=False),
        sa.Column("revocation_policy", sa.String(10), nullable=False),
        sa.Column("added_at", TZ, nullable=False),
        sa.Column("added_by", sa.String(200), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", name="pk_ca_recognised"),
    )


def downgrade() -> None:
    for table in ("ca_recognised", "ca_ocsp_responses", "ca_crls", "ca_certificates", "ca_authorities"):
        op.drop_table(table)
