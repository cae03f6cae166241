"""Clients choose their ID token algorithm (ES256 or RS256).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idp_clients") as batch:
        batch.add_column(sa.Column("id_token_signed_response_alg", sa.String(length=10), nullable=False, server_default="ES256"))


def downgrade() -> None:
    with op.batch_alter_table("idp_clients") as batch:
        batch.drop_column("id_token_signed_response_alg")
