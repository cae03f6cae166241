"""Where the identity provider's own migration history starts (branch label ``idp``).

Until revision 0007 every package's tables were migrated in one shared line of
revisions (those files now live in each package's own ``migrations/versions``).
From here each package has its own branch: a new revision of this package names
the newest revision of this branch as its ``down_revision``, and ``hallmark db
upgrade`` brings every branch to its head in the order of the component list.
A database made before the split is at 0007 and simply moves on to the branches.

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
