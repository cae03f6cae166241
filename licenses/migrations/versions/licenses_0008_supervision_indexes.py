"""E-supervision at provincial scale: licences by (issuer_code, issued_at), requests by (issuer_code, state, decided_at).

The console's e-supervision figures (admin.supervision) count the licences each
department issued since a date and the requests it fulfilled since a date. Without
these indexes both read the whole table; with them each department's rows of the
weeks shown are one range of the index (the licence count from the index alone).
Built ``CONCURRENTLY`` on PostgreSQL, so issuing and the 索取 queue go on while they
are built (core.db.create_index_online).

Revision ID: licenses_0008
Revises: licenses_0007
Create Date: 2026-12-06
"""

from alembic import op

from core.db import create_index_online, drop_index_online

revision = "licenses_0008"
down_revision = "licenses_0007"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_licenses_licences_issued", "licenses_licences", ["issuer_code", "issued_at"]),
    ("ix_licenses_requests_decided", "licenses_requests", ["issuer_code", "state", "decided_at"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        create_index_online(op, name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        drop_index_online(op, name, table)
