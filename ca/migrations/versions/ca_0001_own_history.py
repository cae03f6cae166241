"""Where the certificate authority's own migration history starts (branch label ``ca``). Why each package has a branch:
docs/architecture.md, "Migrations".

Revision ID: ca_0001
Revises: 0007
Create Date: 2026-12-06
"""

revision = "ca_0001"
down_revision = "0007"
branch_labels = ("ca",)
depends_on = None


def upgrade() -> None:
    pass  # nothing to change: the branch point only


def downgrade() -> None:
    pass
