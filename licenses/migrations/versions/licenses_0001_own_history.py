"""Where the licence library's own migration history starts (branch label ``licenses``). Why each package has a branch:
docs/architecture.md, "Migrations".

Revision ID: licenses_0001
Revises: 0007
Create Date: 2026-12-06
"""

revision = "licenses_0001"
down_revision = "0007"
branch_labels = ("licenses",)
depends_on = None


def upgrade() -> None:
    pass  # nothing to change: the branch point only


def downgrade() -> None:
    pass
