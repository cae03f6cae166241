"""Audit trail searched by actor or by subject: indexes on (actor, seq) and (target, seq).

The console's audit search (admin.trail) asks for one actor's or one subject's events
newest first, a page at a time below an event number (keyset on ``seq``). With
``seq`` second in each index that is one range read of the index in its order: no
walk through the whole trail, no sort. Built ``CONCURRENTLY`` on PostgreSQL, so
appends to the trail go on while it is built (core.db.create_index_online).

Revision ID: core_0005
Revises: core_0004
Create Date: 2026-12-06
"""

from alembic import op

from core.db import create_index_online, drop_index_online

revision = "core_0005"
down_revision = "core_0004"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_audit_events_actor_seq", ["actor", "seq"]),
    ("ix_audit_events_target_seq", ["target", "seq"]),
)


def upgrade() -> None:
    for name, columns in INDEXES:
        create_index_online(op, name, "audit_events", columns)


def downgrade() -> None:
    for name, _ in reversed(INDEXES):
        drop_index_online(op, name, "audit_events")
