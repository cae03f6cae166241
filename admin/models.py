"""Tables of the staff console: role grants, console sessions and four-eyes proposals."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime


class RoleGrant(Base):
    """A staff member holds a role, in one department (its unified social credit code) or, for province-wide roles, none."""

    __tablename__ = "admin_role_grants"
    __table_args__ = (Index("ix_admin_role_grants_account_role", "account_id", "role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("idp_accounts.id"))
    role: Mapped[str] = mapped_column(String(32))
    department: Mapped[str | None] = mapped_column(String(18), nullable=True)  # None: the role is not tied to a department
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    granted_by: Mapped[str] = mapped_column(String(200))


class StaffSession(Base):
    """A console session: the browser holds a random token in its own cookie, the row is keyed by the token's SHA-256.

    While a login (or a re-authentication) is under way the ``login_*`` columns hold its state, nonce and PKCE
    verifier; they are cleared when the identity provider's answer comes back.
    """

    __tablename__ = "admin_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)  # None until logged in
    acr: Mapped[int] = mapped_column(Integer, default=0)  # the level of the last authentication (1-3)
    amr: Mapped[str] = mapped_column(String(100), default="")
    auth_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    idp_sid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    id_token: Mapped[str | None] = mapped_column(Text, nullable=True)  # the hint for logging out at the identity provider
    login_state: Mapped[str | None] = mapped_column(String(64), nullable=True)
    login_nonce: Mapped[str | None] = mapped_column(String(64), nullable=True)
    login_verifier: Mapped[str | None] = mapped_column(String(128), nullable=True)
    login_next: Mapped[str | None] = mapped_column(String(400), nullable=True)
    login_level: Mapped[int | None] = mapped_column(Integer, nullable=True)
    login_fresh: Mapped[bool] = mapped_column(Boolean, default=False)  # a re-authentication (max_age=0)
    login_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Proposal(Base):
    """A critical operation waiting for a second person (four eyes): what, with which parameters, by whom and why."""

    __tablename__ = "admin_proposals"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    parameters: Mapped[str] = mapped_column(Text)  # JSON object
    department: Mapped[str | None] = mapped_column(String(18), nullable=True, index=True)  # whose operation it is
    reason: Mapped[str] = mapped_column(String(500))
    proposed_by: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # pending -> executing -> done | failed; pending -> refused. A pending one past expires_at has lapsed.
    status: Mapped[str] = mapped_column(String(12), default="pending", index=True)
    decided_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decision_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: what the operation did, or why it failed


class CounterVisit(Base):
    """A person at a clerk's counter: opened by a search with a reason, then the in-person check and its photo.

    The photo is stored only sealed (``licenses.privacy``: AES-256-GCM under a data key the HSM wraps), its SHA-256
    digest in the clear (it is what the audit trail names). The full resident ID is never stored here.
    """

    __tablename__ = "admin_counter_visits"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    clerk_id: Mapped[str] = mapped_column(String(36), index=True)
    department: Mapped[str | None] = mapped_column(String(18), nullable=True)
    account_id: Mapped[str] = mapped_column(String(36))
    resident_id_masked: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str] = mapped_column(String(500))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    documents: Mapped[str] = mapped_column(String(200), default="")  # originals seen, space-separated codes
    photo_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    photo_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    photo_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    photo_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
