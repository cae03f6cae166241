"""Resource indicators (RFC 8707): the resources a client may ask for, and those granted to a code and a refresh token.

Existing clients get NULL: they may ask for this instance's own APIs that serve one of
their scopes, which is what their tokens were good for before (docs/idp.md, "Audience").
Existing codes and refresh tokens get NULL: no resource was asked for when they were made.

Self-contained (touches only the idp_* tables): the first revision of the identity
provider's own migration history (branch ``idp``).

Revision ID: 0008_resource_indicators
Revises: idp_0001
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_resource_indicators"
down_revision = "idp_0001"  # the identity provider's own branch (idp/migrations/versions)
branch_labels = None
depends_on = None

TABLES = ("idp_clients", "idp_authorization_codes", "idp_refresh_tokens")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("resources", sa.Text(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("resources")
