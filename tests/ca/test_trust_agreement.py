"""Certificate login, signature validation and path validation agree about whom to trust.

All three read the one trust store of :mod:`ca.trust`. Each case asks all three about
the same certificate: certificate login's check (:func:`idp.certlogin.login.check_certificate`),
the validation report of a PDF signed with that certificate's key
(:func:`signing.report.validate`) and the CA's path validation (:func:`ca.validation.validate`).

Our CA is the test session's SoftHSM2-backed hierarchy. The external CA is made here
with software keys, as another province's CA would be, publishes its CRL over HTTP on
127.0.0.1 (path validation fetches it under the ``hard`` policy), and is recognised
through the trust API: as an anchor, or cross-certified by our root.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca import crosscert, identity, issuance, revocation, trust, validation
from core.identifiers import mask_resident_id
from idp.certlogin import login as certlogin
from signing import report
from tests.ca.test_ca_trust import CRLServer, crl_server  # noqa: F401 - crl_server: its fixture, serving DER CRLs on 127.0.0.1
from tests.certlogin_fixtures import new_resident_id
from tests.signing_fixtures import make_pdf

NOW = datetime.now(UTC).replace(microsecond=0)
TRUSTED = {"certificate login": True, "signature validation": True, "path validation": True}
REFUSED = {"certificate login": False, "signature validation": False, "path validation": False}


# -- an external CA with software keys, its CRL over HTTP --------------------------------------------


class ExternalCA:
    """A root CA that has nothing to do with ours, publishing its CRL on ``crl_server``."""

    def __init__(self, crl_server: CRLServer):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fujian Test CA"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"Fujian Test Root {uuid.uuid4().hex[:8]}"),
            ]
        )
        self.certificate = (
            self._builder(self.name, self.key.public_key(), NOW - timedelta(days=30), NOW + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, encipher_only=False, decipher_only=False), critical=True
            )
            .sign(self.key, hashes.SHA256())
        )
        path = f"/{uuid.uuid4().hex}.crl"
        self.crl_url = crl_server.base + path
        crl_server.files[path] = self.crl_der()

    def _builder(self, subject: x509.Name, public_key, not_before: datetime, not_after: datetime) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )

    def person(self, resident_id: str, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A resident's login certificate, with the resident ID where our profiles put it (subject and extensions)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                identity.identifier_attribute("resident_id", resident_id),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        builder = (
            self._builder(subject, key.public_key(), NOW - timedelta(days=1), NOW + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, encipher_only=False, decipher_only=False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.CRLDistributionPoints([x509.DistributionPoint([x509.UniformResourceIdentifier(self.crl_url)], None, None, None)]),
                critical=False,
            )
        )
        for extension in identity.identifier_extensions("resident_id", resident_id):
            builder = builder.add_extension(extension.value, critical=extension.critical)
        return builder.sign(self.key, hashes.SHA256()), key

    def crl_der(self) -> bytes:
        return (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.name)
            .last_update(NOW - timedelta(minutes=1))
            .next_update(NOW + timedelta(days=1))
            .add_extension(x509.CRLNumber(1), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )


# -- the three relying parties -------------------------------------------------------------------------


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def signed_pdf(certificate: x509.Certificate, key, *, chain=(), crls=()) -> bytes:
    """A PDF signed (PAdES B-B) with ``key``; the external CA's CRL goes into the DSS, as a B-LT signature would carry it."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers
    from pyhanko_certvalidator import ValidationContext
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    chain_asn1 = [asn1_x509.Certificate.load(_der(c)) for c in chain]
    signer = signers.SimpleSigner(
        signing_cert=asn1_x509.Certificate.load(_der(certificate)),
        signing_key=asn1_keys.PrivateKeyInfo.load(pkcs8),
        cert_registry=SimpleCertificateStore.from_certs(chain_asn1),
    )
    meta = signers.PdfSignatureMetadata(field_name="Signature1", md_algorithm="sha256")
    if crls:
        meta = signers.PdfSignatureMetadata(
            field_name="Signature1",
            md_algorithm="sha256",
            embed_validation_info=True,
            signer_key_usage={"digital_signature"},
            subfilter=fields.SigSeedSubFilter.PADES,  # PAdES: the revocation data goes into the DSS
            validation_context=ValidationContext(trust_roots=chain_asn1[-1:], crls=list(crls), allow_fetching=False),
        )
    out = io.BytesIO()
    signers.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(make_pdf())), meta, signer=signer, output=out)
    return out.getvalue()


def verdicts(ca_ctx, certificate: x509.Certificate, pdf: bytes, *, chain=()) -> dict:
    """Whether each relying party accepts the certificate; a refusal must say "not trusted" or "revoked", not something else."""
    chain_der = [_der(c) for c in chain]
    try:
        certlogin.check_certificate(ca_ctx, certlogin.Submission(certificate, list(chain), _der(certificate)))
        login = True
    except certlogin.CertLoginRefusal as refusal:
        assert refusal.code in ("untrusted", "revoked"), refusal.english()
        login = False
    entry = report.validate(ca_ctx, pdf)["signatures"][0]
    signature = entry["indication"] == "TOTAL_PASSED"
    assert signature or entry["sub_indication"] in ("NO_CERTIFICATE_CHAIN_FOUND", "REVOKED_NO_POE", "REVOKED_CA_NO_POE", "REVOKED"), entry
    result = validation.validate(ca_ctx, certificate, intermediates=chain_der)
    assert result.ok or result.status in ("untrusted", "revoked"), result.reason
    return {"certificate login": login, "signature validation": signature, "path validation": result.ok}


# -- tests ------------------------------------------------------------------------------------------


def test_our_certificate_is_trusted_by_all_and_refused_by_all_once_revoked(ca_context):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
    resident_id = new_resident_id()
    row, certificate = issuance.issue(
        ca_context,
        "person-auth",
        csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM),
        issuance.Identity(name="林晓", subject_id=resident_id),
        actor="test",
    )
    pdf = signed_pdf(certificate, key)
    assert verdicts(ca_context, certificate, pdf) == TRUSTED

    # Who it names, read by login and by the report through the same API.
    read = certlogin.identity_of(certificate)
    assert (read.kind, read.holder, read.value, read.name) == ("resident_id", "person", resident_id, "林晓")
    signer = report.validate(ca_context, pdf)["signatures"][0]["signer"]
    assert signer["identifier"]["masked"] == mask_resident_id(resident_id) == read.masked()
    assert resident_id not in signer["subject"] and f"serialNumber=IDCCN-{mask_resident_id(resident_id)}" in signer["subject"]

    revocation.revoke(ca_context, row.serial, "keyCompromise", actor="test")
    assert verdicts(ca_context, certificate, pdf) == REFUSED


@pytest.mark.parametrize("how", ["anchor", "cross-certified"])
def test_external_ca_is_trusted_by_all_once_recognised_and_refused_by_all_once_removed(ca_context, crl_server, how):
    external = ExternalCA(crl_server)
    resident_id = new_resident_id()
    certificate, key = external.person(resident_id, "陈静")
    pdf = signed_pdf(certificate, key, chain=[external.certificate], crls=[external.crl_der()])
    chain = [external.certificate]

    assert verdicts(ca_context, certificate, pdf, chain=chain) == REFUSED  # not recognised yet

    pem = external.certificate.public_bytes(serialization.Encoding.PEM)
    if how == "anchor":
        trust.add_anchor(ca_context, pem, actor="test")
    else:
        cross = crosscert.cross_certify(ca_context, pem, actor="test", path_length=0, permitted_subtrees=[])
        assert verdicts(ca_context, certificate, pdf, chain=chain) == TRUSTED
        # Its cross-certificate revoked, then a new one issued: every relying party sees both at once.
        revocation.revoke(ca_context, format(cross.serial_number, "x"), "superseded", actor="test")
        assert verdicts(ca_context, certificate, pdf, chain=chain) == REFUSED
        crosscert.cross_certify(ca_context, pem, actor="test", path_length=0, permitted_subtrees=[])
    assert verdicts(ca_context, certificate, pdf, chain=chain) == TRUSTED
    accepted = validation.validate(ca_context, certificate, intermediates=[_der(external.certificate)])
    assert accepted.trusted_via == ("anchor" if how == "anchor" else "cross-certificate")
    assert certlogin.identity_of(certificate).value == resident_id

    # The store every relying party reads is one object, and it names the external CA.
    store = trust.trust_store(ca_context)
    assert store is trust.trust_store(ca_context)  # cached: not rebuilt per request
    assert (trust.fingerprint(external.certificate) in {a.fingerprint for a in store.anchors.values()}) == (how == "anchor")
    assert (trust.fingerprint(external.certificate) in {c.recognised for c in store.cross.values()}) == (how == "cross-certified")

    trust.remove_anchor(ca_context, trust.fingerprint(external.certificate), actor="test")
    assert trust.trust_store(ca_context) is not store  # removal invalidates the cached store
    assert verdicts(ca_context, certificate, pdf, chain=chain) == REFUSED


@pytest.mark.parametrize("how", ["anchor", "cross-certified"])
def test_a_ca_under_the_soft_policy_is_accepted_without_revocation_data_by_all(ca_context, crl_server, how):
    """Soft: path validation accepts when the status cannot be had; a report accepts a file that carries none."""
    external = ExternalCA(crl_server)
    certificate, key = external.person(new_resident_id(), "郑敏")
    pdf = signed_pdf(certificate, key)  # PAdES B-B: no revocation data in the file
    chain = [external.certificate]
    pem = external.certificate.public_bytes(serialization.Encoding.PEM)
    if how == "anchor":
        trust.add_anchor(ca_context, pem, actor="test", revocation_policy="soft")
    else:
        crosscert.cross_certify(ca_context, pem, actor="test", path_length=0, permitted_subtrees=[], revocation_policy="soft")
    assert verdicts(ca_context, certificate, pdf, chain=chain) == TRUSTED
    entry = report.validate(ca_context, pdf)["signatures"][0]
    assert entry["revocation"]["status"] == "unknown" and entry["revocation"]["policy"] == "soft"
    assert any("soft revocation policy" in warning for warning in entry["warnings"])

    # The same CA under the hard policy: the file's missing revocation data now fails the signature. Here the two
    # differ, on purpose: path validation fetches the CRL the certificate names, a report judges the file as it is.
    trust.remove_anchor(ca_context, trust.fingerprint(external.certificate), actor="test")
    trust.add_anchor(ca_context, pem, actor="test", revocation_policy="hard")
    hard = report.validate(ca_context, pdf)["signatures"][0]
    assert hard["indication"] == "INDETERMINATE" and hard["revocation"]["policy"] == "hard"
    assert validation.validate(ca_context, certificate).revocation.policy == "hard"
