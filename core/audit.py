"""The audit trail: append-only, each event chained to the one before by SHA-256.

Callers append inside their own transaction, so an action and its audit event are
committed together or not at all.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from core import identifiers
from core.models import AuditEvent, AuditHead

GENESIS = "0" * 64


def canonical_form(seq: int, occurred_at: str, actor: str, action: str, target: str, details: str, prev_hash: str) -> bytes:
    return json.dumps(
        {
            "seq": seq,
            "at": occurred_at,
            "actor": actor,
            "action": action,
            "target": target,
            "details": details,
            "prev": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")


def event_hash(event: AuditEvent) -> str:
    form = canonical_form(event.seq, event.occurred_at, event.actor, event.action, event.target, event.details, event.prev_hash)
    return hashlib.sha256(form).hexdigest()


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
    # The UPDATE takes the head row's lock first, so concurrent appends queue up here.
    seq, prev_hash = session.execute(_TAKE_NEXT_SEQ).one()
    event = AuditEvent(
        seq=seq,
        occurred_at=occurred_at,
        actor=actor[:200],
        action=action[:100],
        target=target[:300],
        details=details_text,
        prev_hash=prev_hash,
    )
    event.hash = event_hash(event)
    # Plain INSERT and UPDATE, built once (the ORM's flush and update bookkeeping cost more than the SQL).
    # The returned event is not added to the session: its row is written here.
    session.execute(_INSERT_EVENT, {column: getattr(event, column) for column in _EVENT_COLUMNS})
    session.execute(_SET_LAST_HASH, {"new_hash": event.hash})
    return event


_HEAD = AuditHead.__table__
_TAKE_NEXT_SEQ = update(_HEAD).where(_HEAD.c.id == 1).values(last_seq=_HEAD.c.last_seq + 1).returning(_HEAD.c.last_seq, _HEAD.c.last_hash)
_SET_LAST_HASH = update(_HEAD).where(_HEAD.c.id == 1).values(last_hash=bindparam("new_hash"))
_INSERT_EVENT = insert(AuditEvent.__table__)
_EVENT_COLUMNS = ("seq", "occurred_at", "actor", "action", "target", "details", "prev_hash", "hash")


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    broken_at: int | None = None
    reason: str = ""


def verify(session: Session, batch: int = 2000) -> Verification:
    """Walk the whole chain and name the first broken link."""
    expected_seq, prev_hash, checked = 1, GENESIS, 0
    last_seen = 0
    while True:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.seq >= expected_seq).order_by(AuditEvent.seq).limit(batch)).all()
        if not rows:
            break
        for event in rows:
            if event.seq != expected_seq:
                return Verification(
                    False, checked, expected_seq, f"event #{expected_seq} is missing (the next one present is #{event.seq})"
                )
            if event.prev_hash != prev_hash:
                return Verification(
                    False, checked, event.seq, f"event #{event.seq} does not link to event #{event.seq - 1} (its prev_hash differs)"
                )
            if event_hash(event) != event.hash:
                return Verification(False, checked, event.seq, f"event #{event.seq} was altered: its content no longer matches its hash")
            prev_hash, last_seen = event.hash, event.seq
            expected_seq += 1
            checked += 1
    head = session.get(AuditHead, 1)
    if head is None:
        return Verification(False, checked, None, "the audit head row is missing")
    if head.last_seq != last_seen:
        return Verification(
            False,
            checked,
            last_seen + 1,
            f"the trail ends at event #{last_seen} but the head records #{head.last_seq}: events were removed from the end",
        )
    if head.last_hash != prev_hash:
        return Verification(False, checked, last_seen, f"the head's hash does not match event #{last_seen}")
    return Verification(True, checked)
