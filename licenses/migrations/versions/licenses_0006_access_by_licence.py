"""An index of the access log by licence and client: a status event finds the clients that accessed the licence.

Revision ID: licenses_0006
Revises: licenses_0005
Create Date: 2026-12-06
"""

from alembic import op

revision = "licenses_0006"
down_revision = "licenses_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_licenses_access_log_licence", "licenses_access_log", ["identifier", "client_id"])


def downgrade() -> None:
    op.drop_index("ix_licenses_access_log_licence", table_name="licenses_access_log")
