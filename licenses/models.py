"""Tables of the electronic licence library.

Privacy at rest: a holder's code (resident ID or credit code) is stored only as a
keyed lookup hash (to find it), a masked form (to show it) and an encrypted value;
the face fields a type marks sensitive are stored encrypted with a data key that
an HSM key wraps (``licenses.privacy``). Nothing in these tables shows a full
resident ID or a sensitive field in clear.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Date, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, deferred, mapped_column

from core.db import Base, UTCDateTime


class Issuer(Base):
    """An issuing department: its unified social credit code, its name and the seal its licence files carry."""

    __tablename__ = "licenses_issuers"

    credit_code: Mapped[str] = mapped_column(String(18), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    seal_name: Mapped[str] = mapped_column(String(100))  # a signing seal (signing.models.Seal.name)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))


class LicenceType(Base):
    """A licence type of the catalogue (``licenses.catalogue``): who defines it, who holds it, its face fields."""

    __tablename__ = "licenses_types"

    code: Mapped[str] = mapped_column(String(21), primary_key=True)  # defining authority's credit code + 3 digits
    name: Mapped[str] = mapped_column(String(100))  # Chinese name
    name_en: Mapped[str] = mapped_column(String(200))
    authority_code: Mapped[str] = mapped_column(String(18))
    authority_name: Mapped[str] = mapped_column(String(100))
    holder_kind: Mapped[str] = mapped_column(String(10))  # person | enterprise
    face_schema: Mapped[str] = mapped_column(Text)  # JSON Schema of the face data (with x-title-en, x-sensitive)
    validity: Mapped[str] = mapped_column(Text)  # JSON: {"years": n} | {"months": n} | {} (no end date)
    layout: Mapped[str] = mapped_column(Text)  # JSON: how its file is laid out (licenses.rendering)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))


class DataKey(Base):
    """A data key for sensitive face fields, stored only wrapped by an HSM key."""

    __tablename__ = "licenses_data_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    wrapping_key_uri: Mapped[str] = mapped_column(String(400))
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Licence(Base):
    """One version of a licence, named by its GB/T 36904 identifier."""

    __tablename__ = "licenses_licences"
    __table_args__ = (
        UniqueConstraint("type_code", "issuer_code", "serial", "version"),
        UniqueConstraint("requester", "request_id"),
        UniqueConstraint("issuer_code", "status_list", "status_index", name="uq_licenses_licences_status_entry"),
        Index("ix_licenses_licences_holder", "holder_hash", "type_code"),
        Index("ix_licenses_licences_issued", "issuer_code", "issued_at"),  # e-supervision: issued per department since
    )

    identifier: Mapped[str] = mapped_column(String(120), primary_key=True)
    type_code: Mapped[str] = mapped_column(ForeignKey("licenses_types.code"))
    issuer_code: Mapped[str] = mapped_column(ForeignKey("licenses_issuers.credit_code"))
    serial: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    holder_type: Mapped[str] = mapped_column(String(3))  # 111 resident ID | 001 credit code (GB/T 36903)
    holder_hash: Mapped[str] = mapped_column(String(64))  # keyed lookup hash of the holder's code
    holder_masked: Mapped[str] = mapped_column(String(24))
    holder_cipher: Mapped[bytes] = mapped_column(LargeBinary)  # the holder's code, encrypted (licenses.privacy)
    holder_name: Mapped[str] = mapped_column(String(200))  # as on the face; public pages and QR codes mask a person's (privacy.public_name)
    state: Mapped[str] = mapped_column(String(12), index=True)  # licenses.lifecycle.STATES
    state_reason: Mapped[str] = mapped_column(String(200), default="")
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_from: Mapped[date] = mapped_column(Date)
    valid_until: Mapped[date | None] = mapped_column(Date, nullable=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    issued_by: Mapped[str] = mapped_column(String(200))
    face_public: Mapped[str] = mapped_column(Text)  # JSON of the face fields not marked sensitive
    face_secret: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # the sensitive ones, encrypted
    data_key_id: Mapped[int | None] = mapped_column(ForeignKey("licenses_data_keys.id"), nullable=True)
    predecessor: Mapped[str | None] = mapped_column(String(120), nullable=True)  # the version this one replaces
    successor: Mapped[str | None] = mapped_column(String(120), nullable=True)  # the version that replaced this one
    requester: Mapped[str] = mapped_column(String(200))  # who asked for it (client or officer): scope of request_id
    request_id: Mapped[str | None] = mapped_column(String(100), nullable=True)  # the requester's idempotency key
    document_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)  # the sealed file's signing record
    pdf_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pdf: Mapped[bytes | None] = deferred(mapped_column(LargeBinary, nullable=True))  # the sealed file; None until sealed
    # Provincial scale (licenses.imports, licenses.statuslist): where an imported licence came from, whether its
    # file is still to be sealed, and its entry in its issuer's status lists (a random index, the same in every purpose).
    import_id: Mapped[str | None] = mapped_column(ForeignKey("licenses_imports.id"), nullable=True)
    source_row: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the row of the import file
    file_state: Mapped[str] = mapped_column(String(8), default="sealed", index=True)  # sealed | pending | sealing
    file_claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # a sealing worker's claim runs out then
    status_list: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the issuer's list number
    status_index: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the bit in that list


class StateChange(Base):
    """A licence's state history: from, to, why, who and when."""

    __tablename__ = "licenses_state_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    identifier: Mapped[str] = mapped_column(ForeignKey("licenses_licences.identifier"), index=True)
    from_state: Mapped[str] = mapped_column(String(12))
    to_state: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str] = mapped_column(String(200))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Grant(Base):
    """A standing grant: a client may reach licences of one type in one mode, for some matters."""

    __tablename__ = "licenses_grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(100), index=True)
    type_code: Mapped[str] = mapped_column(ForeignKey("licenses_types.code"))
    mode: Mapped[str] = mapped_column(String(10))  # compare | read | copy (each includes the ones before)
    matters: Mapped[str] = mapped_column(Text)  # JSON list of matter codes; ["*"] for any
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AccessEntry(Base):
    """One access to the library by an approval system: appended to a hash chain the holder can read."""

    __tablename__ = "licenses_access_log"
    # Who accessed a licence: status events to subscribers of the licences they accessed (licenses.events).
    __table_args__ = (Index("ix_licenses_access_log_licence", "identifier", "client_id"),)

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32))  # ISO 8601 UTC, as hashed
    client_id: Mapped[str] = mapped_column(String(100))
    holder_hash: Mapped[str] = mapped_column(String(64), index=True)
    identifier: Mapped[str] = mapped_column(String(120), default="")  # the licence, when one was reached
    type_code: Mapped[str] = mapped_column(String(21), default="")
    route: Mapped[str] = mapped_column(String(10))  # consent | grant
    mode: Mapped[str] = mapped_column(String(10))  # lookup | query | compare | read | copy | verify
    purpose: Mapped[str] = mapped_column(String(200))
    matter: Mapped[str] = mapped_column(String(100))
    fields: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of the face fields touched
    result: Mapped[str] = mapped_column(String(20))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AccessHead(Base):
    """The access log's head: the last sequence number and hash (one row; its lock orders appends)."""

    __tablename__ = "licenses_access_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))


class StampedCopy(Base):
    """A stamped copy (加注件) of a licence file: for one client, matter and purpose, valid until a date.

    The copy's file is not kept (the client has it); its signing record and SHA-256
    are, so an uploaded copy is recognised (``licenses.verification``).
    """

    __tablename__ = "licenses_copies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random; printed in the copy's QR code
    identifier: Mapped[str] = mapped_column(ForeignKey("licenses_licences.identifier"), index=True)
    client_id: Mapped[str] = mapped_column(String(100))
    client_name: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(200))
    matter: Mapped[str] = mapped_column(String(100))
    valid_until: Mapped[date] = mapped_column(Date)  # the last day the copy may be used (China Standard Time)
    made_at: Mapped[datetime] = mapped_column(UTCDateTime)
    made_by: Mapped[str] = mapped_column(String(200))
    document_id: Mapped[str] = mapped_column(String(40), index=True)  # the sealed file's signing record
    pdf_sha256: Mapped[str] = mapped_column(String(64), index=True)


class ImportRun(Base):
    """One bulk import of legacy licences from a file: its provenance and how far it got (to resume from)."""

    __tablename__ = "licenses_imports"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # from the file's digest, type and issuer
    source_name: Mapped[str] = mapped_column(String(255))
    source_sha256: Mapped[str] = mapped_column(String(64), index=True)
    type_code: Mapped[str] = mapped_column(ForeignKey("licenses_types.code"))
    issuer_code: Mapped[str] = mapped_column(ForeignKey("licenses_issuers.credit_code"))
    imported_by: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(12))  # running | finished | failed
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    rows_added: Mapped[int] = mapped_column(Integer, default=0)
    rows_existing: Mapped[int] = mapped_column(Integer, default=0)  # already in the library (a rerun adds nothing)
    rows_rejected: Mapped[int] = mapped_column(Integer, default=0)
    resume_after: Mapped[int] = mapped_column(Integer, default=0)  # the last source row whose batch is committed
    error_report: Mapped[str] = mapped_column(String(400), default="")  # where the rejected rows were written
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StatusList(Base):
    """One W3C Bitstring Status List of an issuer for one purpose (revocation, suspension)."""

    __tablename__ = "licenses_status_lists"

    issuer_code: Mapped[str] = mapped_column(ForeignKey("licenses_issuers.credit_code"), primary_key=True)
    list_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    purpose: Mapped[str] = mapped_column(String(12), primary_key=True)  # revocation | suspension
    size: Mapped[int] = mapped_column(Integer)  # bits (at least 131,072)
    bits: Mapped[bytes] = mapped_column(LargeBinary)  # the raw bitstring, size / 8 bytes
    version: Mapped[int] = mapped_column(Integer, default=1)  # up by one on every change
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LicenceRequest(Base):
    """A request for a licence missing from the library (索取), in the issuing department's queue."""

    __tablename__ = "licenses_requests"
    __table_args__ = (
        Index("ix_licenses_requests_queue", "issuer_code", "state", "deadline"),
        Index("ix_licenses_requests_decided", "issuer_code", "state", "decided_at"),  # e-supervision: fulfilled since
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    type_code: Mapped[str] = mapped_column(ForeignKey("licenses_types.code"))
    issuer_code: Mapped[str] = mapped_column(ForeignKey("licenses_issuers.credit_code"))
    holder_type: Mapped[str] = mapped_column(String(3))
    holder_hash: Mapped[str] = mapped_column(String(64), index=True)
    holder_masked: Mapped[str] = mapped_column(String(24))
    holder_cipher: Mapped[bytes] = mapped_column(LargeBinary)  # the holder's code, encrypted (the department needs it)
    requested_by: Mapped[str] = mapped_column(String(200))  # account:<id> or client:<id>
    matter: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(10))  # open | fulfilled | refused
    deadline: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by: Mapped[str] = mapped_column(String(200), default="")
    decision: Mapped[str] = mapped_column(String(200), default="")  # the refusal's reason, or a note
    identifier: Mapped[str | None] = mapped_column(String(120), nullable=True)  # the licence that fulfilled it
    seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # when the requester saw the answer


class Subscription(Base):
    """An approval system's subscription to licence status events (RFC 8417 SETs pushed by RFC 8935)."""

    __tablename__ = "licenses_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(100), index=True)
    endpoint: Mapped[str] = mapped_column(String(400))  # where SETs are POSTed
    type_codes: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of licence types subscribed to
    accessed: Mapped[bool] = mapped_column(Boolean, default=False)  # also every licence this client has accessed
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
