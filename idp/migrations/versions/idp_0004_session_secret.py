"""The SSO session gets a secret that the cookie's MAC covers, drawn anew whenever its account or level changes.

A cookie from before a re-authentication or a step-up then opens nothing (no
session fixation). Sessions that exist at upgrade get an empty secret, which no
cookie matches: their browsers sign in again once.

Revision ID: idp_0004_session_secret
Revises: idp_0003_logout_to_outbox
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "idp_0004_session_secret"
down_revision = "idp_0003_logout_to_outbox"
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases (SQLite 3.35+ drops a column in place): a batch operation would rebuild
# idp_sessions, which the session clients' and logout notices' foreign keys point at.


def upgrade() -> None:
    op.add_column("idp_sessions", sa.Column("secret", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("idp_sessions", "secret")
