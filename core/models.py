"""Tables owned by ``core``: the audit trail, the outbox of outgoing deliveries, the shared rate limits, one-time codes
and the development SMS inbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Double, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime


class AuditEvent(Base):
    """One security-relevant action. Rows are only ever inserted, in ``seq`` order.

    ``hash`` is SHA-256 over the row's canonical form, which includes
    ``prev_hash``, the hash of event ``seq - 1``: changing, removing or reordering
    a row breaks the chain from there on.
    """

    __tablename__ = "audit_events"
    # The console's search by actor or subject, newest first below an event number (admin.trail): one range each.
    __table_args__ = (
        Index("ix_audit_events_actor_seq", "actor", "seq"),
        Index("ix_audit_events_target_seq", "target", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[str] = mapped_column(String(32), index=True)  # ISO 8601 UTC, kept as text so it hashes exactly
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100), index=True)
    target: Mapped[str] = mapped_column(String(300), default="")
    details: Mapped[str] = mapped_column(Text, default="{}")  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The single row naming the chain's last event; it serialises appends."""

    __tablename__ = "audit_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))


class OutboxMessage(Base):
    """One outgoing delivery (a logout token, a status event, an SMS) owed to someone, kept until delivered or given up.

    Written in the transaction of the change it announces, so nothing announced is
    lost and nothing is announced for a change that rolled back. A worker claims a
    due message (``claimed_by`` / ``claimed_until``) before sending it, so two nodes
    never send the same message at once; a crashed worker's claim runs out.
    """

    __tablename__ = "core_outbox"
    __table_args__ = (Index("ix_core_outbox_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(40))  # who handles it, e.g. "idp.logout.back", "licences.set"
    target: Mapped[str] = mapped_column(String(400))  # where it goes (a URL, a phone number's hash, ...)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[str] = mapped_column(String(100))
    headers: Mapped[str] = mapped_column(Text, default="{}")  # JSON object of extra headers
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)  # one message per key
    state: Mapped[str] = mapped_column(String(10), default="pending")  # pending | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RateLimit(Base):
    """One rate-limited key (hashed) and when its bucket is full again (core.ratelimit: GCRA, epoch seconds)."""

    __tablename__ = "core_rate_limits"
    __table_args__ = (Index("ix_core_rate_limits_tat", "tat"),)

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    tat: Mapped[float] = mapped_column(Double)


class OneTimeCode(Base):
    """A code texted to a phone (core.otp): only its keyed hash, for whom (keyed hash of purpose and number), until when."""

    __tablename__ = "core_otp_codes"
    __table_args__ = (Index("ix_core_otp_codes_subject", "subject", "used_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    purpose: Mapped[str] = mapped_column(String(30))
    subject: Mapped[str] = mapped_column(String(64))
    code_hash: Mapped[str] = mapped_column(String(64))
    tries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SmsInboxMessage(Base):
    """A text the development inbox kept instead of sending (core.sms.EmbeddedInbox); shown at /dev/sms."""

    __tablename__ = "core_sms_inbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    phone: Mapped[str] = mapped_column(String(20))
    purpose: Mapped[str] = mapped_column(String(30))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
