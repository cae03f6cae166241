"""Tables of the certificate authority."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime


class Authority(Base):
    """One of our CAs: the root and the issuing CAs under it. Keys live in the HSM."""

    __tablename__ = "ca_authorities"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)  # "root", "people", "services"
    role: Mapped[str] = mapped_column(String(20))  # "root" | "issuing"
    parent: Mapped[str | None] = mapped_column(ForeignKey("ca_authorities.name"), nullable=True)
    key_uri: Mapped[str] = mapped_column(String(400))
    certificate: Mapped[bytes] = mapped_column(LargeBinary)  # DER
    subject: Mapped[str] = mapped_column(String(400))
    not_after: Mapped[datetime] = mapped_column(UTCDateTime)
    crl_number: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Certificate(Base):
    """Every certificate an authority of ours issued, stored before it is returned."""

    __tablename__ = "ca_certificates"
    __table_args__ = (
        Index("ix_ca_certificates_authority_status", "authority", "status"),
        Index("ix_ca_certificates_subject_id_hash", "subject_id_hash"),
    )

    serial: Mapped[str] = mapped_column(String(40), primary_key=True)  # lower-case hex, no leading zeros stripped
    authority: Mapped[str] = mapped_column(ForeignKey("ca_authorities.name"))
    profile: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(400))
    subject_id_kind: Mapped[str | None] = mapped_column(String(20), nullable=True)  # resident_id | credit_code
    subject_id_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # keyed hash, for lookup
    subject_id_masked: Mapped[str | None] = mapped_column(String(40), nullable=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the DER
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    not_after: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    status: Mapped[str] = mapped_column(String(10), default="valid")  # valid | revoked
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revocation_reason: Mapped[str | None] = mapped_column(String(30), nullable=True)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    # Set only for certificates of our own services (OCSP responders, TSA) whose keys are in our HSM.
    key_uri: Mapped[str | None] = mapped_column(String(400), nullable=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    issued_by: Mapped[str] = mapped_column(String(200))


class CRL(Base):
    """Every CRL an authority published; the highest number is the current one."""

    __tablename__ = "ca_crls"

    authority: Mapped[str] = mapped_column(ForeignKey("ca_authorities.name"), primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    this_update: Mapped[datetime] = mapped_column(UTCDateTime)
    next_update: Mapped[datetime] = mapped_column(UTCDateTime)
    der: Mapped[bytes] = mapped_column(LargeBinary)


class OCSPResponse(Base):
    """A pre-signed OCSP response per certificate, replaced before nextUpdate and on revocation."""

    __tablename__ = "ca_ocsp_responses"

    serial: Mapped[str] = mapped_column(String(40), primary_key=True)
    authority: Mapped[str] = mapped_column(ForeignKey("ca_authorities.name"))
    produced_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_update: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    der: Mapped[bytes] = mapped_column(LargeBinary)


class RecognisedCA(Base):
    """An external CA we accept as a trust anchor (provincial CA, another city's CA)."""

    __tablename__ = "ca_recognised"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the DER
    subject: Mapped[str] = mapped_column(String(400))
    der: Mapped[bytes] = mapped_column(LargeBinary)
    how: Mapped[str] = mapped_column(String(20))  # "anchor" | "cross-certified"
    revocation_policy: Mapped[str] = mapped_column(String(10), default="hard")  # hard (fail closed) | soft
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    added_by: Mapped[str] = mapped_column(String(200))
    note: Mapped[str] = mapped_column(Text, default="")
