"""Tables of trusted electronic files: seals, who may use them, signed documents, remote-signing sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime


class Seal(Base):
    """A department's electronic seal: a department-seal certificate, its HSM key and the seal image."""

    __tablename__ = "signing_seals"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    department: Mapped[str] = mapped_column(String(64))  # as in the certificate's O and CN
    credit_code: Mapped[str] = mapped_column(String(18), index=True)  # the department's unified social credit code
    certificate_serial: Mapped[str] = mapped_column(String(40), ForeignKey("ca_certificates.serial"))
    key_uri: Mapped[str] = mapped_column(String(400))
    image_png: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(10), default="active")  # active | retired
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))


class SealGrant(Base):
    """A client (hall, approval system) may use the seals of one department."""

    __tablename__ = "signing_seal_grants"

    client_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    credit_code: Mapped[str] = mapped_column(String(18), primary_key=True)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    granted_by: Mapped[str] = mapped_column(String(200))


class SignedDocument(Base):
    """A PDF this service sealed or finished signing: what the verification page looks up.

    The document itself is not kept (it may hold personal data); its SHA-256 and the
    SHA-256 of our signature value are, so an uploaded copy can be recognised, and its
    title, page count and a small picture of page 1 (body text not legible), so a
    reader can tell which document a verification code belongs to. Records made before
    these were kept have none.
    """

    __tablename__ = "signing_documents"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # seal | token
    seal_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    signer: Mapped[str] = mapped_column(String(400))  # display subject, resident IDs masked
    signer_id_kind: Mapped[str | None] = mapped_column(String(20), nullable=True)  # resident_id | credit_code
    signer_id_masked: Mapped[str | None] = mapped_column(String(32), nullable=True)
    certificate_serial: Mapped[str] = mapped_column(String(64))
    certificate_fingerprint: Mapped[str] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(8))
    field_name: Mapped[str] = mapped_column(String(100))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # of the file as we returned it
    signature_sha256: Mapped[str] = mapped_column(String(64), index=True)  # of the CMS signature value
    size: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(200))
    # What the verification page shows so a reader can tell which document this is (signing.pdf.preview).
    title: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the file's /Title, if it has one
    pages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    thumbnail_png: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # page 1, 240 px wide


class RemoteSession(Base):
    """A PDF prepared for a USB key: the key signs ``signed_attrs``, then the server finishes.

    The prepared file is kept only until the session is finished or expires.
    """

    __tablename__ = "signing_remote_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    status: Mapped[str] = mapped_column(String(10), default="pending")  # pending | finished
    level: Mapped[str] = mapped_column(String(8))
    field_name: Mapped[str] = mapped_column(String(100))
    md_algorithm: Mapped[str] = mapped_column(String(16))
    certificate: Mapped[bytes] = mapped_column(LargeBinary)  # DER of the signer's certificate
    chain: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of base64 DER CA certificates
    prepared_pdf: Mapped[bytes] = mapped_column(LargeBinary)
    reserved_start: Mapped[int] = mapped_column(Integer)
    reserved_end: Mapped[int] = mapped_column(Integer)
    document_digest: Mapped[bytes] = mapped_column(LargeBinary)
    signed_attrs: Mapped[bytes] = mapped_column(LargeBinary)  # DER SET OF Attribute: what the key signs
    document_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
