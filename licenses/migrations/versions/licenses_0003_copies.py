"""Stamped copies (加注件) of licence files: who asked, for which matter and purpose, until when, and their seal record;
licences indexed by their file's signing record, which is how an uploaded file is recognised.

Revision ID: licenses_0003
Revises: licenses_0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "licenses_0003"
down_revision = "licenses_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "licenses_copies",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("identifier", sa.String(120), nullable=False),
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("client_name", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(200), nullable=False),
        sa.Column("matter", sa.String(100), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=False),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("made_by", sa.String(200), nullable=False),
        sa.Column("document_id", sa.String(40), nullable=False),
        sa.Column("pdf_sha256", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["identifier"], ["licenses_licences.identifier"], name="fk_licenses_copies_identifier_licenses_licences"),
        sa.PrimaryKeyConstraint("id", name="pk_licenses_copies"),
    )
    op.create_index("ix_licenses_copies_identifier", "licenses_copies", ["identifier"])
    op.create_index("ix_licenses_copies_document_id", "licenses_copies", ["document_id"])
    op.create_index("ix_licenses_copies_pdf_sha256", "licenses_copies", ["pdf_sha256"])
    op.create_index("ix_licenses_licences_document_id", "licenses_licences", ["document_id"])


def downgrade() -> None:
    op.drop_index("ix_licenses_licences_document_id", "licenses_licences")
    op.drop_table("licenses_copies")
