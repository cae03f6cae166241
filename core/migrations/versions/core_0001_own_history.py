"""Where the audit trail's own migration history starts (branch label ``core``). Why each package has a branch:
docs/architecture.md, "Migrations".

Revision ID: core_0001
Revises: 0007
Create Date: 2026-12-06
"""

revision = "core_0001"
down_revision = "0007"
branch_labels = ("core",)
depends_on = None


def upgrade() -> None:
    pass  # nothing to change: the branch point only


def downgrade() -> None:
    pass
