"""A claim on a licence file being sealed runs out: a worker that died leaves no file stuck in *sealing*.

Revision ID: licenses_0007
Revises: licenses_0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from core.db import UTCDateTime

revision = "licenses_0007"
down_revision = "licenses_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("licenses_licences") as batch:
        batch.add_column(sa.Column("file_claimed_until", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("licenses_licences") as batch:
        batch.drop_column("file_claimed_until")
