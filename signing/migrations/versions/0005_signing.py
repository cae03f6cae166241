"""Trusted electronic files: seals, seal grants, signed documents, remote-signing sessions.

Revision ID: 0005_signing
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_signing"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "signing_seals",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("credit_code", sa.String(18), nullable=False),
        sa.Column("certificate_serial", sa.String(40), nullable=False),
        sa.Column("key_uri", sa.String(400), nullable=False),
        sa.Column("image_png", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.ForeignKeyConstraint(
            ["certificate_serial"], ["ca_certificates.serial"], name="fk_signing_seals_certificate_serial_ca_certificates"
        ),
        sa.PrimaryKeyConstraint("name", name="pk_signing_seals"),
    )
    op.create_index("ix_signing_seals_credit_code", "signing_seals", ["credit_code"])
    op.create_table(
        "signing_seal_grants",
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("credit_code", sa.String(18), nullable=False),
        sa.Column("granted_at", TZ, nullable=False),
        sa.Column("granted_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "credit_code", name="pk_signing_seal_grants"),
    )
    op.create_table(
        "signing_documents",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("seal_name", sa.String(100), nullable=True),
        sa.Column("signer", sa.String(400), nullable=False),
        sa.Column("signer_id_kind", sa.String(20), nullable=True),
        sa.Column("signer_id_masked", sa.String(32), nullable=True),
        sa.Column("certificate_serial", sa.String(64), nullable=False),
        sa.Column("certificate_fingerprint", sa.String(64), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("field_name", sa.String(100), nullable=False),
        sa.Column("signed_at", TZ, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("signature_sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_signing_documents"),
    )
    op.create_index("ix_signing_documents_signed_at", "signing_documents", ["signed_at"])
    op.create_index("ix_signing_documents_sha256", "signing_documents", ["sha256"])
    op.create_index("ix_signing_documents_signature_sha256", "signing_documents", ["signature_sha256"])
    op.create_table(
        "signing_remote_sessions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("field_name", sa.String(100), nullable=False),
        sa.Column("md_algorithm", sa.String(16), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.Column("chain", sa.Text(), nullable=False),
        sa.Column("prepared_pdf", sa.LargeBinary(), nullable=False),
        sa.Column("reserved_start", sa.Integer(), nullable=False),
        sa.Column("reserved_end", sa.Integer(), nullable=False),
        sa.Column("document_digest", sa.LargeBinary(), nullable=False),
        sa.Column("signed_attrs", sa.LargeBinary(), nullable=False),
        sa.Column("document_id", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_signing_remote_sessions"),
    )
    op.create_index("ix_signing_remote_sessions_expires_at", "signing_remote_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("signing_remote_sessions")
    op.drop_table("signing_documents")
    op.drop_table("signing_seal_grants")
    op.drop_table("signing_seals")
