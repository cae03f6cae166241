"""Where the staff console's own migration history starts (branch label ``admin``). Why each package has a branch:
docs/architecture.md, "Migrations".

Revision ID: admin_0001
Revises: 0007
Create Date: 2026-12-06
"""

revision = "admin_0001"
down_revision = "0007"
branch_labels = ("admin",)
depends_on = None


def upgrade() -> None:
    pass  # nothing to change: the branch point only


def downgrade() -> None:
    pass
