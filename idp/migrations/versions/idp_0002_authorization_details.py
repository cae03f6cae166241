"""Rich authorization requests (RFC 9396): the authorization details a person granted, kept with a code and a refresh token.

Existing codes and refresh tokens get NULL: no details were asked for when they were made.

Revision ID: idp_0002_authorization_details
Revises: 0008_resource_indicators
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "idp_0002_authorization_details"
down_revision = "0008_resource_indicators"  # the newest revision of the identity provider's branch
branch_labels = None
depends_on = None

TABLES = ("idp_authorization_codes", "idp_refresh_tokens")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("authorization_details", sa.Text(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("authorization_details")
