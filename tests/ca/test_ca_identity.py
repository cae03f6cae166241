"""ca.identity: reading the identifier a certificate names, and showing its subject masked.

Certificates are made here with software keys: only their subject and extensions matter.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca import identity
from core.identifiers import lookup_hash, mask_resident_ids, plausible_resident_ids

RESIDENT = "11010519491231002X"
OTHER_RESIDENT = "440106198202021945"
CREDIT = "91350100M000100Y43"
KEY = ec.generate_private_key(ec.SECP256R1())


def certificate(attributes: list[x509.NameAttribute], extensions: list[x509.Extension] = ()) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"), *attributes]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")]))
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
    )
    for extension in extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(KEY, hashes.SHA256())


def person(resident_id: str = RESIDENT, *, extensions=None) -> x509.Certificate:
    return certificate(
        [identity.identifier_attribute("resident_id", resident_id), x509.NameAttribute(NameOID.COMMON_NAME, "张三")],
        identity.identifier_extensions("resident_id", resident_id) if extensions is None else extensions,
    )


def enterprise() -> x509.Certificate:
    return certificate(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "福州示例科技有限公司"),
            identity.identifier_attribute("credit_code", CREDIT),
            x509.NameAttribute(NameOID.COMMON_NAME, "福州示例科技有限公司"),
        ],
        identity.identifier_extensions("credit_code", CREDIT),
    )


def private(oid: x509.ObjectIdentifier, der: bytes) -> x509.Extension:
    return x509.Extension(oid, False, x509.UnrecognizedExtension(oid, der))


def test_a_person_and_an_enterprise_are_read_from_subject_and_extensions():
    found = identity.identity_of(person())
    assert (found.kind, found.holder, found.value, found.name) == ("resident_id", "person", RESIDENT, "张三")
    assert found.source == "subject serialNumber (IDCCN-)" and found.masked() == "110***********002X"
    assert found.lookup(b"k" * 16) == lookup_hash(b"k" * 16, "resident_id", RESIDENT)
    assert RESIDENT not in repr(found)
    assert [(kind, source) for kind, _, source in identity.statements(person())] == [
        ("resident_id", "subject serialNumber (IDCCN-)"),
        ("resident_id", "extension 1.2.156.10260.4.1.1.1"),
        ("resident_id", "extension 1.2.156.10260.4.1.1"),
    ]

    firm = identity.identity_of(enterprise())
    assert (firm.kind, firm.holder, firm.value, firm.name) == ("credit_code", "enterprise", CREDIT, "福州示例科技有限公司")
    assert firm.as_dict() == {"kind": "credit_code", "value": CREDIT, "masked": "913501********0Y43", "source": firm.source}
    # asn1crypto certificates and DER are read the same way (signing holds asn1crypto ones).
    der = enterprise().public_bytes(serialization.Encoding.DER)
    assert identity.identity_of(asn1_x509.Certificate.load(der)).value == identity.identity_of(der).value == CREDIT


def test_an_extension_alone_names_the_holder():
    only_extension = certificate([x509.NameAttribute(NameOID.COMMON_NAME, "李四")], identity.identifier_extensions("resident_id", RESIDENT))
    found = identity.identity_of(only_extension)
    assert (found.value, found.source) == (RESIDENT, "extension 1.2.156.10260.4.1.1.1")
    assert identity.stated_identity(only_extension).value == RESIDENT


@pytest.mark.parametrize(
    "make, code",
    [
        (lambda: certificate([x509.NameAttribute(NameOID.COMMON_NAME, "nobody")]), "identity_missing"),
        (lambda: person(extensions=identity.identifier_extensions("credit_code", CREDIT)), "identity_ambiguous"),
        (lambda: person(extensions=identity.identifier_extensions("resident_id", OTHER_RESIDENT)), "identity_conflicting"),
        (lambda: person("11010519491231002Y", extensions=[]), "identity_invalid"),
        (lambda: person(extensions=[private(identity.OID_RESIDENT_ID_2023, b"\x02\x01\x05")]), "identity_unreadable"),
        (lambda: person(extensions=[private(identity.OID_RESIDENT_ID_2012, b"not der")]), "identity_unreadable"),
    ],
    ids=["none", "person-and-enterprise", "two-ids", "bad-check-character", "integer-extension", "garbage-extension"],
)
def test_login_refuses_what_does_not_name_one_valid_identifier(make, code):
    with pytest.raises(identity.IdentityError) as refused:
        identity.identity_of(make())
    assert refused.value.code == code
    assert RESIDENT not in str(refused.value) and OTHER_RESIDENT not in str(refused.value)


def test_a_report_takes_the_identifier_as_stated():
    # Another CA's habits: an unreadable extension is passed over, and nothing is validated.
    odd = person("11010519491231002Y", extensions=[private(identity.OID_RESIDENT_ID_2023, b"not der")])
    stated = identity.stated_identity(odd)
    assert (stated.kind, stated.value, stated.source) == ("resident_id", "11010519491231002Y", "subject serialNumber (IDCCN-)")
    assert identity.stated_identity(certificate([x509.NameAttribute(NameOID.COMMON_NAME, "nobody")])) is None


def test_subjects_are_shown_with_every_resident_id_masked():
    shown = identity.display_subject(person())
    assert shown == "CN=张三, serialNumber=IDCCN-110***********002X, C=CN"
    assert identity.display_name(enterprise().subject) == (
        f"CN=福州示例科技有限公司, organizationIdentifier=NTRCN-{CREDIT}, O=福州示例科技有限公司, C=CN"
    )  # credit codes are public register data
    # A resident ID wherever it stands, not only in serialNumber.
    stray = certificate([x509.NameAttribute(NameOID.COMMON_NAME, f"王五 {OTHER_RESIDENT}")])
    assert OTHER_RESIDENT not in identity.display_subject(stray) and "440***********1945" in identity.display_subject(stray)


def test_free_text_masking_and_the_audit_check_share_one_pattern():
    text = f"holder {OTHER_RESIDENT}, code 910000000000000000, ref A{OTHER_RESIDENT}"
    assert mask_resident_ids(text) == "holder 440***********1945, code 910***********0000, ref A" + OTHER_RESIDENT
    # Masking takes every ID-shaped number; the audit trail refuses only plausible IDs (a province and a real birth date).
    assert plausible_resident_ids(text) == [OTHER_RESIDENT]
