"""Join the two branches that were built side by side: signing (0005) and certificate login (0006).

Revision ID: 0007
Revises: 0005_signing, 0006_certificate_login
Create Date: 2026-11-22
"""

revision = "0007"
down_revision = ("0005_signing", "0006_certificate_login")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # nothing to change: the branches touch different tables


def downgrade() -> None:
    pass
