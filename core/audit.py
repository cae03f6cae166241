"""The audit trail: append-only, each event chained to the one before by SHA-256 (``core.chain``).

Callers append inside their own transaction, so an action and its audit event are
committed together or not at all.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from core import identifiers
from core.chain import GENESIS, HashChain, Verification
from core.models import AuditEvent, AuditHead

__all__ = ["GENESIS", "Verification", "event_hash", "record", "verify"]

# The hashed members and their columns: the canonical form written since the trail began.
CHAIN = HashChain(
    AuditEvent.__table__,
    AuditHead.__table__,
    {"seq": "seq", "at": "occurred_at", "actor": "actor", "action": "action", "target": "target", "details": "details"},
    noun="event",
    name="audit trail",
)


def event_hash(event: AuditEvent) -> str:
    return CHAIN.row_hash(event)


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str = "",
    details: dict | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Append one event. Never pass secrets, PINs or unmasked resident IDs in it."""
    details_text = json.dumps(details or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for text in (actor, target, details_text):
        if identifiers.plausible_resident_ids(text):  # a full resident ID anywhere in an event is a privacy leak
            raise ValueError("refusing to write a full resident ID into the audit trail; mask or hash it first")
    occurred_at = (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    row = CHAIN.append(
        session,
        {"occurred_at": occurred_at, "actor": actor[:200], "action": action[:100], "target": target[:300], "details": details_text},
    )
    # The returned event is not added to the session: its row is already written.
    return AuditEvent(**row)


def verify(session: Session, batch: int = 2000) -> Verification:
    """Walk the whole chain and name the first broken link."""
    return CHAIN.verify(session, batch)
