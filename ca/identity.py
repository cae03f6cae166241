"""Who a certificate names: the identity OIDs of our profiles, reading them back, and the subject fit to show.

Our profiles (``ca/profiles.toml``) state a holder's identifier twice over, as Chinese
relying parties expect:

* in the subject: a person's resident ID as serialNumber ``IDCCN-<id>`` (ETSI EN 319 412-1
  semantics identifier: national identity card), an enterprise's or department's unified
  social credit code as organizationIdentifier ``NTRCN-<code>`` (national trade register);
* in private extensions whose value is a PrintableString (GM/T 0015-2012 and its 2023
  revision): the resident ID under 1.2.156.10260.4.1.1 and 1.2.156.10260.4.1.1.1, the credit
  code under 1.2.156.10260.4.1.3 and 1.2.156.10260.4.4, the organisation code embedded in it
  under 1.2.156.10260.4.1.4.

:func:`identifier_attribute` and :func:`identifier_extensions` write them (issuance);
:func:`identity_of` reads them back strictly, for deciding who someone is (certificate
login: every place must name the same valid identifier); :func:`stated_identity` reads
them as the certificate states them, for reports about a certificate that may come from
another CA. :func:`display_name` is a subject or issuer as text for pages, logs and stored
rows, with resident IDs masked. Validating and masking the identifiers themselves is
:mod:`core.identifiers`.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.x509.oid import NameOID

from core.identifiers import (
    CREDIT_CODE,
    RESIDENT_ID,
    InvalidIdentifier,
    lookup_hash,
    mask_credit_code,
    mask_resident_id,
    mask_resident_ids,
    validate_credit_code,
    validate_resident_id,
)

RESIDENT_ID_PREFIX = "IDCCN-"
CREDIT_CODE_PREFIX = "NTRCN-"

OID_RESIDENT_ID_2012 = x509.ObjectIdentifier("1.2.156.10260.4.1.1")
OID_RESIDENT_ID_2023 = x509.ObjectIdentifier("1.2.156.10260.4.1.1.1")
OID_BUSINESS_REGISTRATION = x509.ObjectIdentifier("1.2.156.10260.4.1.3")
OID_ORGANISATION_CODE = x509.ObjectIdentifier("1.2.156.10260.4.1.4")
OID_CREDIT_CODE_2023 = x509.ObjectIdentifier("1.2.156.10260.4.4")

# Where an identifier may be read, in the order a report prefers them: the subject, then the newer extension.
_SUBJECT = ((NameOID.SERIAL_NUMBER, RESIDENT_ID_PREFIX, RESIDENT_ID), (NameOID.ORGANIZATION_IDENTIFIER, CREDIT_CODE_PREFIX, CREDIT_CODE))
_EXTENSIONS = (
    (OID_RESIDENT_ID_2023, RESIDENT_ID),
    (OID_RESIDENT_ID_2012, RESIDENT_ID),
    (OID_CREDIT_CODE_2023, CREDIT_CODE),
    (OID_BUSINESS_REGISTRATION, CREDIT_CODE),
)
_SOURCES = {
    NameOID.SERIAL_NUMBER: f"subject serialNumber ({RESIDENT_ID_PREFIX})",
    NameOID.ORGANIZATION_IDENTIFIER: f"subject organizationIdentifier ({CREDIT_CODE_PREFIX})",
}
HOLDERS = {RESIDENT_ID: "person", CREDIT_CODE: "enterprise"}
# Attribute names RFC 4514 lacks and cryptography would print as dotted OIDs.
_ATTRIBUTE_NAMES = {NameOID.SERIAL_NUMBER: "serialNumber", NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier"}


class IdentityError(ValueError):
    """A certificate does not name one valid identifier; ``code`` says how (never the identifier itself)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code  # identity_missing | identity_ambiguous | identity_conflicting | identity_invalid | identity_unreadable


@dataclass(frozen=True, repr=False)
class CertificateIdentity:
    """The identifier a certificate names, and the holder's name as it stands there."""

    kind: str  # resident_id | credit_code
    value: str  # never logged or shown in full: see masked()
    name: str
    source: str = ""  # where it was read: "subject serialNumber (IDCCN-)", "extension 1.2.156.10260.4.4", ...

    @property
    def holder(self) -> str:
        """``person`` or ``enterprise``."""
        return HOLDERS[self.kind]

    def masked(self) -> str:
        return mask_resident_id(self.value) if self.kind == RESIDENT_ID else mask_credit_code(self.value)

    def lookup(self, key: bytes) -> str:
        """The keyed lookup hash under which accounts and certificates of this identifier are found."""
        return lookup_hash(key, self.kind, self.value)

    def as_dict(self) -> dict:
        """For a JSON answer that may carry the identifier in full (the hall matching an applicant)."""
        return {"kind": self.kind, "value": self.value, "masked": self.masked(), "source": self.source}

    def __repr__(self) -> str:
        return f"CertificateIdentity({self.kind}, {self.masked()!r}, {self.name!r})"


# -- writing -------------------------------------------------------------------------------------


def identifier_attribute(kind: str, value: str) -> x509.NameAttribute:
    """The subject attribute naming a validated identifier: serialNumber IDCCN-... or organizationIdentifier NTRCN-..."""
    if kind == RESIDENT_ID:
        return x509.NameAttribute(NameOID.SERIAL_NUMBER, RESIDENT_ID_PREFIX + value)
    return x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, CREDIT_CODE_PREFIX + value)


def identifier_extensions(kind: str, value: str) -> list[x509.Extension]:
    """The private extensions that state a validated identifier again (non-critical PrintableStrings)."""
    if kind == RESIDENT_ID:
        pairs = [(OID_RESIDENT_ID_2012, value), (OID_RESIDENT_ID_2023, value)]
    else:
        pairs = [
            (OID_BUSINESS_REGISTRATION, value),
            (OID_ORGANISATION_CODE, validate_credit_code(value).organisation_code),
            (OID_CREDIT_CODE_2023, value),
        ]
    return [x509.Extension(oid, False, x509.UnrecognizedExtension(oid, asn1_core.PrintableString(text).dump())) for oid, text in pairs]


# -- reading -------------------------------------------------------------------------------------


def _certificate(certificate) -> x509.Certificate:
    """A cryptography certificate from one, from an asn1crypto one, or from DER."""
    if isinstance(certificate, x509.Certificate):
        return certificate
    if isinstance(certificate, (bytes, bytearray)):
        return x509.load_der_x509_certificate(bytes(certificate))
    return x509.load_der_x509_certificate(certificate.dump())


def _extension_text(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    """The text of a private identifier extension; None when absent; IdentityError when unreadable."""
    try:
        extension = certificate.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    try:
        value = asn1_core.load(getattr(extension.value, "value", b"")).native
    except (ValueError, TypeError):
        value = None
    if not isinstance(value, str):
        raise IdentityError("identity_unreadable", f"the identifier extension {oid.dotted_string} cannot be read")
    return value.strip()


def statements(certificate, *, strict: bool = True) -> list[tuple[str, str, str]]:
    """Every (kind, value, source) the certificate states, subject first; unreadable extensions raise unless not ``strict``."""
    certificate = _certificate(certificate)
    found = []
    for oid, prefix, kind in _SUBJECT:
        for attribute in certificate.subject.get_attributes_for_oid(oid):
            text = str(attribute.value)
            if text.startswith(prefix):
                found.append((kind, text[len(prefix) :], _SOURCES[oid]))
    for oid, kind in _EXTENSIONS:
        try:
            text = _extension_text(certificate, oid)
        except IdentityError:
            if strict:
                raise
            text = None
        if text:
            found.append((kind, text, f"extension {oid.dotted_string}"))
    return found


def holder_name(certificate) -> str:
    """The holder's name: the subject's commonName, else its organizationName, else empty."""
    subject = _certificate(certificate).subject
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME) or subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(names[0].value) if names else ""


def identity_of(certificate) -> CertificateIdentity:
    """The one identifier the certificate names, validated; every place that states one must agree.

    For deciding who someone is. Raises :class:`IdentityError` when the certificate names
    none, both a person and an enterprise, two different values, an invalid one, or has
    an identifier extension that cannot be read.
    """
    certificate = _certificate(certificate)
    found = statements(certificate)
    kinds = {kind for kind, _, _ in found}
    if len(kinds) > 1:
        raise IdentityError("identity_ambiguous", "the certificate names both a person and an enterprise")
    if not kinds:
        raise IdentityError("identity_missing", "the certificate carries no resident ID or unified social credit code")
    kind = kinds.pop()
    try:
        if kind == RESIDENT_ID:
            values = {validate_resident_id(value.upper()).value for _, value, _ in found}
        else:
            values = {validate_credit_code(value).value for _, value, _ in found}
    except InvalidIdentifier:
        raise IdentityError("identity_invalid", "the identifier in the certificate is not a valid resident ID or credit code") from None
    if len(values) != 1:
        raise IdentityError("identity_conflicting", "the certificate names two different identifiers")
    return CertificateIdentity(kind, values.pop(), holder_name(certificate), found[0][2])


def stated_identity(certificate) -> CertificateIdentity | None:
    """The identifier as the certificate states it (first place found, not validated), or None.

    For describing a certificate (validation reports, remote signing), which may come
    from another CA with its own habits: unreadable extensions are passed over.
    """
    certificate = _certificate(certificate)
    found = statements(certificate, strict=False)
    if not found:
        return None
    kind, value, source = found[0]
    return CertificateIdentity(kind, value, holder_name(certificate), source)


# -- showing -------------------------------------------------------------------------------------


def display_name(name: x509.Name) -> str:
    """A subject or issuer as RFC 4514-style text, most specific first, every resident ID masked.

    What pages, logs, the audit trail and stored rows show; the full identifier stays in
    the certificate's DER.
    """
    parts = []
    for attribute in name:
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.hex()
        if attribute.oid == NameOID.SERIAL_NUMBER and value.startswith(RESIDENT_ID_PREFIX):
            value = RESIDENT_ID_PREFIX + mask_resident_id(value[len(RESIDENT_ID_PREFIX) :])
        parts.append(f"{_ATTRIBUTE_NAMES.get(attribute.oid, attribute.rfc4514_attribute_name)}={value}")
    return mask_resident_ids(", ".join(reversed(parts)))


def display_subject(certificate) -> str:
    return display_name(_certificate(certificate).subject)
