"""Signed documents: title, page count and a small picture of page 1, for the verification page.

Records made before have none (the documents are not kept, so nothing can be filled in).

Revision ID: signing_0002_document_preview
Revises: signing_0001
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "signing_0002_document_preview"
down_revision = "signing_0001"  # the newest revision of the signing branch
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("signing_documents") as batch:
        batch.add_column(sa.Column("title", sa.String(200), nullable=True))
        batch.add_column(sa.Column("pages", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("thumbnail_png", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("signing_documents") as batch:
        batch.drop_column("thumbnail_png")
        batch.drop_column("pages")
        batch.drop_column("title")
