"""Back-channel logout notices move to core's outbox: those still pending become outbox messages, the rows go.

From now on idp queues back-channel notices as core_outbox messages (kind
``idp.logout.back``); idp_logout_deliveries keeps the front-channel notices the
logged-out page renders. A pending back-channel row becomes a message with the
note a token is made from (sid, sub, client) and keeps its attempts and its next
attempt time; delivered and failed ones were only history (the audit trail has
them). Downgrade does not bring them back: notices are short-lived.

Revision ID: idp_0003_logout_to_outbox
Revises: idp_0002_authorization_details
Create Date: 2026-12-06
"""

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "idp_0003_logout_to_outbox"
down_revision = "idp_0002_authorization_details"
branch_labels = None
depends_on = None  # core_outbox (core_0002) exists already: core's branch is upgraded before idp's (hallmark.components order)

KIND = "idp.logout.back"


def upgrade() -> None:
    bind = op.get_bind()
    pending = bind.execute(
        sa.text(
            "SELECT d.id, d.sid, d.client_id, d.attempts, d.last_error, d.next_attempt_at, s.account_id, c.backchannel_logout_uri"
            " FROM idp_logout_deliveries d"
            " JOIN idp_sessions s ON s.sid = d.sid"
            " JOIN idp_clients c ON c.client_id = d.client_id"
            " WHERE d.channel = 'back' AND d.status = 'pending'"
        )
    ).fetchall()
    outbox = sa.table(
        "core_outbox",
        *(sa.column(name) for name in ("kind", "target", "body", "content_type", "headers", "dedupe_key", "state", "attempts")),
        *(sa.column(name) for name in ("next_attempt_at", "last_error", "created_at")),
    )
    now = datetime.now(UTC).replace(microsecond=0)
    if bind.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # SQLite keeps UTC without an offset (core.db.UTCDateTime)
    rows = [
        {
            "kind": KIND,
            "target": row.backchannel_logout_uri or "",
            "body": json.dumps({"sid": row.sid, "sub": row.account_id, "client_id": row.client_id}).encode(),
            "content_type": "application/json",
            "headers": "{}",
            "dedupe_key": f"{KIND}:{row.sid}:{row.client_id}",
            "state": "pending",
            "attempts": row.attempts,
            "next_attempt_at": row.next_attempt_at,
            "last_error": row.last_error or "",
            "created_at": now,
        }
        for row in pending
        if row.backchannel_logout_uri
    ]
    if rows:
        op.bulk_insert(outbox, rows)
    op.execute("DELETE FROM idp_logout_deliveries WHERE channel = 'back'")


def downgrade() -> None:
    pass
