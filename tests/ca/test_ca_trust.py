"""Recognised CAs, cross-certificates and path validation.

A second, unrelated CA is built here with plain software keys (as another city's
CA would be); its CRLs are served over real HTTP from 127.0.0.1. Our side runs on
the real SoftHSM2 token and database (SQLite and PostgreSQL), and openssl judges
the cross-certificate.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select

from ca import crosscert, issuance, revocation, trust, validation
from ca.context import CAContext
from ca.models import Certificate, RecognisedCA
from core.models import AuditEvent
from core.problems import Problem
from tests.conftest import free_port, run_hallmark

RESIDENT = "11010519491231002X"
BIN = Path(sys.executable).parent
NOW = datetime.now(UTC).replace(microsecond=0)


# -- an unrelated CA with software keys --------------------------------------------------------


def _name(common_name: str, organisation: str = "Fujian Test CA") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(False, False, False, False, False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


class ExternalCA:
    """A CA that has nothing to do with ours: root or intermediate, leaves, CRLs."""

    def __init__(self, common_name: str, *, issuer: ExternalCA | None = None, path_length: int | None = None, crl_url: str | None = None):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(common_name)
        self.revoked: dict[int, datetime] = {}
        builder = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(issuer.name if issuer else self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=30))
            .not_valid_after(NOW + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
        )
        if issuer is not None:
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
            if crl_url:
                builder = builder.add_extension(_crl_dp(crl_url), critical=False)
        self.certificate = builder.sign((issuer or self).key, hashes.SHA256())

    def leaf(
        self,
        dns: str = "hall.example.gov.cn",
        *,
        crl_url: str | None = None,
        not_after: datetime | None = None,
        not_before: datetime | None = None,
    ) -> x509.Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name("Test Hall Login"))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - timedelta(days=1))
            .not_valid_after(not_after or NOW + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, encipher_only=False, decipher_only=False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if crl_url:
            builder = builder.add_extension(_crl_dp(crl_url), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def crl(self) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.name)
            .last_update(NOW - timedelta(minutes=1))
            .next_update(NOW + timedelta(days=1))
            .add_extension(x509.CRLNumber(len(self.revoked) + 1), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        for serial, when in self.revoked.items():
            builder = builder.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _crl_dp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints([x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)])


class CRLServer:
    """Serves CRLs (DER) over HTTP on 127.0.0.1, as an external CA's repository would."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, path: str, ca: ExternalCA) -> str:
        self.files[path] = ca.crl()
        return self.base + path


@pytest.fixture(scope="module")
def crl_server():
    server = CRLServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def _unreachable_url() -> str:
    return f"http://127.0.0.1:{free_port()}/nothing-listens-here.crl"  # the port was free a moment ago


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _events(ctx: CAContext, action: str) -> list[AuditEvent]:
    with ctx.sessions() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _problem(call, status: int) -> Problem:
    with pytest.raises(Problem) as caught:
        call()
    assert caught.value.status == status, caught.value.detail
    return caught.value


# -- tests ---------------------------------------------------------------------------------------


def test_unrelated_ca_is_refused_until_trusted_and_again_after_removal(ca_context, crl_server, tmp_path):
    other = ExternalCA("Fujian Test Root CA")
    crl_url = crl_server.publish(f"/{tmp_path.name}/root.crl", other)
    leaf = other.leaf(crl_url=crl_url)

    before = validation.validate(ca_context, leaf)
    assert (before.ok, before.status) == (False, "untrusted")
    assert "Fujian Test Root CA" in before.reason and "trust add" in before.reason

    anchor = trust.add_anchor(ca_context, _pem(other.certificate), actor="test", note="provincial CA")
    assert (anchor.how, anchor.revocation_policy) == ("anchor", "hard")
    assert trust.anchor_kind(anchor) == "self-signed root"
    assert [a.fingerprint for a in trust.list_anchors(ca_context)] == [anchor.fingerprint]
    added = _events(ca_context, "ca.trust.added")
    assert len(added) == 1 and added[0].target == anchor.fingerprint and '"kind":"root"' in added[0].details

    accepted = validation.validate(
        ca_context, leaf.public_bytes(serialization.Encoding.DER), usage={"digitalSignature"}, extended_usage={"clientAuth"}
    )
    assert (accepted.ok, accepted.status) == (True, "valid"), accepted.reason
    assert accepted.trusted_via == "anchor" and accepted.anchor_fingerprint == anchor.fingerprint
    assert accepted.chain == ["CN=Test Hall Login, O=Fujian Test CA, C=CN", "CN=Fujian Test Root CA, O=Fujian Test CA, C=CN"]
    assert accepted.revocation.policy == "hard" and accepted.revocation.notes == []

    wrong_usage = validation.validate(ca_context, leaf, usage={"non_repudiation"})
    assert wrong_usage.status == "invalid" and "non repudiation" in wrong_usage.reason

    # Their CRL now lists the leaf: fetched over HTTP, the revocation is final.
    other.revoked[leaf.serial_number] = NOW - timedelta(minutes=1)
    crl_server.publish(f"/{tmp_path.name}/root.crl", other)
    revoked = validation.validate(ca_context, leaf)
    assert (revoked.ok, revoked.status) == (False, "revoked") and revoked.revocation.revoked_at is not None

    expired = validation.validate(ca_context, other.leaf(not_before=NOW - timedelta(days=20), not_after=NOW - timedelta(days=1)))
    assert (expired.ok, expired.status) == (False, "expired") and "expired" in expired.reason

    # Re-adding, our own CA, an end-entity certificate and garbage are refused with a reason.
    assert (
        "already recognised"
        in _problem(
            lambda: trust.add_anchor(ca_context, other.certificate.public_bytes(serialization.Encoding.DER), actor="test"), 409
        ).detail
    )
    assert (
        "Hallmark's own 'root' CA"
        in _problem(lambda: trust.add_anchor(ca_context, ca_context.authority("root").der, actor="test"), 409).detail
    )
    assert "not a CA certificate" in _problem(lambda: trust.add_anchor(ca_context, _pem(leaf), actor="test"), 422).detail
    assert "not an X.509 certificate" in _problem(lambda: trust.add_anchor(ca_context, b"\x30\x03\x02\x01", actor="test"), 400).detail
    _problem(lambda: trust.add_anchor(ca_context, _pem(ExternalCA("Other CA").certificate), actor="test", revocation_policy="lax"), 400)

    removed = trust.remove_anchor(ca_context, anchor.fingerprint[:16], actor="test")
    assert removed.fingerprint == anchor.fingerprint and trust.list_anchors(ca_context) == []
    assert [e.target for e in _events(ca_context, "ca.trust.removed")] == [anchor.fingerprint]
    assert validation.validate(ca_context, leaf).status == "untrusted"
    _problem(lambda: trust.remove_anchor(ca_context, anchor.fingerprint, actor="test"), 404)


def test_intermediate_anchor_and_revocation_policies(ca_context, crl_server, tmp_path):
    # An intermediate may be an anchor too; paths then end at it.
    root = ExternalCA("Xiamen Root CA")
    intermediate = ExternalCA("Xiamen Issuing CA", issuer=root)
    anchor = trust.add_anchor(ca_context, _pem(intermediate.certificate), actor="test")
    assert trust.anchor_kind(anchor).startswith("intermediate issued by CN=Xiamen Root CA")

    good = intermediate.leaf(crl_url=crl_server.publish(f"/{tmp_path.name}/xiamen.crl", intermediate))
    fine = validation.validate(ca_context, good)
    assert fine.status == "valid", fine.reason

    # hard: no revocation information to be had means no.
    unreachable = validation.validate(ca_context, intermediate.leaf(crl_url=_unreachable_url()))
    assert (unreachable.ok, unreachable.status) == (False, "revocation_unknown")
    assert "hard policy" in unreachable.reason
    silent = validation.validate(ca_context, intermediate.leaf())  # names no CRL at all
    assert silent.status == "revocation_unknown"

    # soft: accepted, and the result says what could not be checked.
    lenient = ExternalCA("Zhangzhou Root CA")
    trust.add_anchor(ca_context, _pem(lenient.certificate), actor="test", revocation_policy="soft")
    soft = validation.validate(ca_context, lenient.leaf(crl_url=_unreachable_url()))
    assert (soft.ok, soft.status) == (True, "valid"), soft.reason
    assert soft.revocation.policy == "soft" and any("Failure to fetch CRL" in n and "soft policy" in n for n in soft.revocation.notes)
    undeclared = validation.validate(ca_context, lenient.leaf())
    assert undeclared.ok and any("names no CRL or OCSP location" in n for n in undeclared.revocation.notes)
    # A revocation its CRL does state is still final under soft.
    revoked_leaf = lenient.leaf(crl_url=f"{crl_server.base}/{tmp_path.name}/zhangzhou.crl")
    lenient.revoked[revoked_leaf.serial_number] = NOW - timedelta(minutes=1)
    crl_server.publish(f"/{tmp_path.name}/zhangzhou.crl", lenient)
    assert validation.validate(ca_context, revoked_leaf).status == "revoked"


def test_der_ending_in_a_whitespace_octet_is_read_whole(ca_context):
    # A DER signature ends in any octet; 0x20 or 0x0a there must not be "stripped" away.
    while True:
        other = ExternalCA("Nanping Root CA")
        der = other.certificate.public_bytes(serialization.Encoding.DER)
        if der[-1:].isspace():
            break
    trust.add_anchor(ca_context, der, actor="test", revocation_policy="soft")
    while True:
        leaf = other.leaf().public_bytes(serialization.Encoding.DER)
        if leaf[-1:].isspace():
            break
    assert validation.validate(ca_context, leaf).status == "valid"


def test_our_own_certificates_use_our_records(ca_context):
    row, certificate = issuance.issue(ca_context, "person-auth", _csr(), issuance.Identity(name="张三", subject_id=RESIDENT), actor="test")
    result = validation.validate(ca_context, certificate, usage={"digital_signature"}, extended_usage={"client_auth"})
    assert (result.ok, result.status, result.trusted_via) == (True, "valid", "hallmark"), result.reason
    assert result.anchor == "CN=Hallmark Root CA, O=Hallmark, C=CN"
    assert result.chain[1] == "CN=Hallmark People and Enterprises CA, O=Hallmark, C=CN"
    assert RESIDENT not in repr(result.chain) and "IDCCN-110" in result.chain[0]
    assert result.revocation.policy == "hallmark"

    before_revocation = datetime.now(UTC) - timedelta(minutes=1)  # after notBefore (issuance - 5 min)
    revocation.revoke(ca_context, row.serial, "keyCompromise", actor="test")
    revoked = validation.validate(ca_context, certificate)
    assert (revoked.ok, revoked.status) == (False, "revoked")
    assert revoked.revocation.revocation_reason == "key_compromise" and RESIDENT not in revoked.reason
    # At a moment before the revocation it was good; after its end it has expired.
    assert validation.validate(ca_context, certificate, at=before_revocation).status == "valid"
    assert validation.validate(ca_context, certificate, at=certificate.not_valid_after_utc + timedelta(days=1)).status == "expired"

    # Our own responder certificate (no CRL DP, ocsp-nocheck) is covered by the issuing CA's CRL.
    with ca_context.sessions() as session:
        responder = session.scalars(select(Certificate).where(Certificate.profile == "ocsp-signing")).first()
    assert validation.validate(ca_context, responder.der).status == "valid"
    assert validation.validate(ca_context, ca_context.authority("root").der).status == "valid"  # the anchor itself

    for garbage in (
        b"",
        b"not a certificate",
        b"\x30\x82\x01\x00garbage",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        42,
    ):
        bad = validation.validate(ca_context, garbage)
        assert (bad.ok, bad.status) == (False, "invalid")
    assert validation.validate(ca_context, certificate, intermediates=[b"junk"]).status == "invalid"


def test_cross_certificate_constrains_the_external_ca(ca_context, crl_server, tmp_path):
    other = ExternalCA("Fuzhou Root CA")
    crl_url = crl_server.publish(f"/{tmp_path.name}/fuzhou.crl", other)
    inside = other.leaf("portal.example.gov.cn", crl_url=crl_url)
    outside = other.leaf("portal.example.com", crl_url=crl_url)
    sub_ca = ExternalCA("Fuzhou Sub CA", issuer=other, crl_url=crl_url)
    too_deep = sub_ca.leaf("deep.example.gov.cn")
    assert validation.validate(ca_context, inside).status == "untrusted"

    with pytest.raises(Problem) as bad_subtree:
        crosscert.cross_certify(ca_context, _pem(other.certificate), path_length=0, permitted_subtrees=["dns:"], actor="test")
    assert bad_subtree.value.status == 400
    cross = crosscert.cross_certify(
        ca_context,
        _pem(other.certificate),
        path_length=0,
        permitted_subtrees=["dns:.example.gov.cn", "dn:C=CN,O=Fujian Test CA"],
        actor="test",
    )
    root = ca_context.authority("root").certificate
    assert cross.subject == other.certificate.subject and cross.issuer == root.subject
    assert cross.public_key() == other.certificate.public_key()
    assert cross.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    nc = cross.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical and x509.DNSName("example.gov.cn") in nc.value.permitted_subtrees
    assert (
        cross.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        == other.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    )
    assert cross.not_valid_after_utc <= NOW + timedelta(days=5 * 365 + 2)
    with ca_context.sessions() as session:
        stored = session.get(Certificate, format(cross.serial_number, "x"))
        recognised = session.scalars(select(RecognisedCA)).one()
    assert (stored.profile, stored.authority) == ("cross-certificate", "root")
    assert (recognised.how, recognised.fingerprint) == ("cross-certified", trust.fingerprint(other.certificate))

    through = validation.validate(ca_context, inside)
    assert (through.ok, through.trusted_via) == (True, "cross-certificate"), through.reason
    assert through.anchor == "CN=Hallmark Root CA, O=Hallmark, C=CN" and through.chain[-1] == through.anchor
    assert through.chain[1] == "CN=Fuzhou Root CA, O=Fujian Test CA, C=CN"

    refused = validation.validate(ca_context, outside)
    assert (
        (refused.ok, refused.status) == (False, "invalid")
        and "permitted namespace" in refused.reason
        and "portal.example.com" in refused.reason
    )
    deep = validation.validate(ca_context, too_deep, intermediates=[sub_ca.certificate])
    assert (deep.ok, deep.status) == (False, "invalid") and "path length" in deep.reason

    assert (
        "already has a cross-certificate"
        in _problem(
            lambda: crosscert.cross_certify(ca_context, _pem(other.certificate), path_length=None, permitted_subtrees=[], actor="test"), 409
        ).detail
    )
    assert (
        "through a cross-certificate" in _problem(lambda: trust.add_anchor(ca_context, _pem(other.certificate), actor="test"), 409).detail
    )

    assert "issued by Hallmark's own 'root' CA" in _problem(lambda: trust.add_anchor(ca_context, _pem(cross), actor="test"), 409).detail
    # pkilint, which nobody here wrote, finds nothing at WARNING or above in it or in root -> cross.
    (tmp_path / "cross.pem").write_bytes(_pem(cross))
    (tmp_path / "root.pem").write_bytes(_pem(root))
    for tool, *files in (("lint_pkix_cert", "cross.pem"), ("lint_pkix_signer_signee_cert_chain", "root.pem", "cross.pem")):
        linted = subprocess.run(
            [str(BIN / tool), "lint", "-s", "WARNING", *(str(tmp_path / f) for f in files)], capture_output=True, text=True
        )
        assert linted.returncode == 0, f"{tool}: {linted.stdout}{linted.stderr}"

    # Taking it out of the trust store revokes the cross-certificate, on our root's CRL.
    trust.remove_anchor(ca_context, recognised.fingerprint, actor="test")
    with ca_context.sessions() as session:
        assert session.get(Certificate, format(cross.serial_number, "x")).status == "revoked"
    assert validation.validate(ca_context, inside).status == "untrusted"


def test_threads_and_async_callers_share_the_cached_trust_store(ca_context):
    _, ours = issuance.issue(ca_context, "person-auth", _csr(), issuance.Identity(name="张三", subject_id=RESIDENT), actor="test")
    other = ExternalCA("Longyan Root CA")
    trust.add_anchor(ca_context, _pem(other.certificate), actor="test", revocation_policy="soft")
    theirs = other.leaf()
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(lambda c: validation.validate(ca_context, c).status, [ours, theirs] * 8))
    assert statuses == ["valid"] * 16

    async def inside_a_loop():
        awaited = await validation.async_validate(ca_context, ours)
        blocking = validation.validate(ca_context, theirs)  # a synchronous caller inside a running loop
        return awaited.status, blocking.status

    assert asyncio.run(inside_a_loop()) == ("valid", "valid")


def _root_pem_from_instance(instance: Path) -> bytes:
    with sqlite3.connect(instance / "hallmark.db") as db:
        (der,) = db.execute("SELECT certificate FROM ca_authorities WHERE name = 'root'").fetchone()
    return _pem(x509.load_der_x509_certificate(der))


def test_cli_trust_add_and_cross_certify_judged_by_openssl(tmp_path, crl_server):
    instance = tmp_path / "instance"
    init = run_hallmark(instance, "init")
    assert init.returncode == 0, init.stderr

    anchored = ExternalCA("Quanzhou Root CA")
    (tmp_path / "anchored.pem").write_bytes(_pem(anchored.certificate))
    first = run_hallmark(instance, "ca", "trust", "add", str(tmp_path / "anchored.pem"), "--note", "city CA")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("recognised CN=Quanzhou Root CA") and trust.fingerprint(anchored.certificate) in first.stdout
    second = run_hallmark(instance, "ca", "trust", "add", str(tmp_path / "anchored.pem"))
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "already recognised" in second.stderr
    listed = run_hallmark(instance, "ca", "trust", "list")
    assert "anchor" in listed.stdout and "Quanzhou Root CA" in listed.stdout

    other = ExternalCA("Putian Root CA")
    (tmp_path / "other.pem").write_bytes(_pem(other.certificate))
    issued = run_hallmark(
        instance, "ca", "cross-certify", str(tmp_path / "other.pem"), "--path-length", "0", "--permitted-subtree", "dns:.example.gov.cn"
    )
    assert issued.returncode == 0, issued.stderr
    assert issued.stdout.startswith("-----BEGIN CERTIFICATE-----") and "cross-certified CN=Putian Root CA" in issued.stderr
    (tmp_path / "cross.pem").write_text(issued.stdout)
    (tmp_path / "ourroot.pem").write_bytes(_root_pem_from_instance(instance))
    (tmp_path / "inside.pem").write_bytes(_pem(other.leaf("hall.example.gov.cn")))
    (tmp_path / "outside.pem").write_bytes(_pem(other.leaf("hall.example.org")))

    def verify(leaf: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "openssl",
                "verify",
                "-x509_strict",
                "-CAfile",
                tmp_path / "ourroot.pem",
                "-untrusted",
                tmp_path / "cross.pem",
                tmp_path / leaf,
            ],
            capture_output=True,
            text=True,
        )

    accepted = verify("inside.pem")
    assert accepted.returncode == 0 and accepted.stdout.strip().endswith("OK"), accepted.stdout + accepted.stderr
    refused = verify("outside.pem")
    assert refused.returncode != 0 and "permitted subtree violation" in refused.stdout + refused.stderr

    not_a_ca = run_hallmark(instance, "ca", "cross-certify", str(tmp_path / "inside.pem"))
    assert not_a_ca.returncode == 1 and "not a CA certificate" in not_a_ca.stderr and "Traceback" not in not_a_ca.stderr
