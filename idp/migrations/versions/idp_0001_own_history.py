"""Where the identity provider's own migration history starts (branch label ``idp``). Why each package has a branch:
docs/architecture.md, "Migrations".

Revision ID: idp_0001
Revises: 0007
Create Date: 2026-12-06
"""

revision = "idp_0001"
down_revision = "0007"
branch_labels = ("idp",)
depends_on = None


def upgrade() -> None:
    pass  # nothing to change: the branch point only


def downgrade() -> None:
    pass
