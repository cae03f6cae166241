"""CRLs and OCSP, judged by openssl and pkilint, in-process and against a running server."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import subprocess
import sys
import threading
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp as x509_ocsp
from cryptography.x509.oid import NameOID
from sqlalchemy import select, update

from ca import issuance, revocation
from ca.models import CRL, Authority, Certificate, OCSPResponse
from ca.status import crl, ocsp, publication, schedule
from core.problems import Problem
from tests.conftest import initialised_copy, run_hallmark, start_server, stop_server

RESIDENT = "11010519491231002X"
BIN = Path(sys.executable).parent


# -- helpers --------------------------------------------------------------------------------------


def issue(ctx, name="张三") -> tuple[Certificate, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )
    return issuance.issue(
        ctx, "person-auth", csr.public_bytes(serialization.Encoding.PEM), issuance.Identity(name=name, subject_id=RESIDENT), actor="test"
    )


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, algorithm=None, nonce: bytes | None = None) -> bytes:
    builder = x509_ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def checked(der: bytes, issuer: x509.Certificate) -> x509_ocsp.OCSPResponse:
    """A successful response whose signer is a delegated responder certified by ``issuer``."""
    response = x509_ocsp.load_der_ocsp_response(der)
    assert response.response_status is x509_ocsp.OCSPResponseStatus.SUCCESSFUL
    (responder,) = response.certificates
    responder.verify_directly_issued_by(issuer)
    assert x509.ExtendedKeyUsageOID.OCSP_SIGNING in responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(responder.public_key()).digest
    responder.public_key().verify(response.signature, response.tbs_response_bytes, ec.ECDSA(response.signature_hash_algorithm))
    return response


def status_of(ctx, der: bytes, issuer: str = "people") -> x509_ocsp.OCSPResponse:
    return checked(der, ctx.authority(issuer).certificate)


def _asn1_request(serials, name_hash=b"\x00" * 20, key_hash=b"\x00" * 20, nonce: bytes | None = None) -> bytes:
    """An OCSPRequest cryptography's builder cannot make (several CertIDs, negative serials)."""
    return _asn1_request_ids([(serial, name_hash, key_hash) for serial in serials], nonce)


def _asn1_request_ids(ids, nonce: bytes | None = None) -> bytes:
    from asn1crypto import ocsp as asn1_ocsp

    tbs = {
        "request_list": [
            {"req_cert": {"hash_algorithm": {"algorithm": "sha1"}, "issuer_name_hash": n, "issuer_key_hash": k, "serial_number": s}}
            for s, n, k in ids
        ]
    }
    if nonce is not None:
        tbs["request_extensions"] = [{"extn_id": "nonce", "critical": False, "extn_value": nonce}]
    return asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump()


def lint(tool: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), "lint", "-s", "WARNING", *map(str, args)], check=False, capture_output=True, text=True)


def pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


# -- CRL ------------------------------------------------------------------------------------------


def test_crl_numbers_increase_and_revocations_appear_with_reason(ca_context, tmp_path):
    ctx = ca_context
    people = ctx.authority("people").certificate
    with ctx.sessions() as session, session.begin():
        first = crl.publish(ctx, session, "people")
    with ctx.sessions() as session, session.begin():
        second = crl.publish(ctx, session, "people")
    assert second.number == first.number + 1
    with ctx.sessions() as session:
        assert session.get(Authority, "people").crl_number == second.number

    compromised, _ = issue(ctx)
    unspecified, _ = issue(ctx)
    kept, _ = issue(ctx)
    revocation.revoke(ctx, compromised.serial, "keyCompromise", actor="test")
    revocation.revoke(ctx, unspecified.serial, "unspecified", actor="test")

    current = crl.current(ctx, "people")
    assert current.number == second.number + 2  # one CRL per revocation
    parsed = x509.load_der_x509_crl(crl.current_der(ctx, "people"))
    assert parsed.is_signature_valid(people.public_key())
    assert parsed.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == current.number
    aki = parsed.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == people.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert parsed.next_update_utc - parsed.last_update_utc == crl.NEXT_UPDATE
    entry = parsed.get_revoked_certificate_by_serial_number(int(compromised.serial, 16))
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.key_compromise
    plain = parsed.get_revoked_certificate_by_serial_number(int(unspecified.serial, 16))
    assert len(plain.extensions) == 0  # RFC 5280 5.3.1: no reasonCode rather than unspecified
    assert parsed.get_revoked_certificate_by_serial_number(int(kept.serial, 16)) is None

    (tmp_path / "people.crl").write_bytes(parsed.public_bytes(serialization.Encoding.DER))
    findings = lint("lint_crl", "-t", "CRL", "-p", "PKIX", tmp_path / "people.crl")
    assert findings.returncode == 0, findings.stdout + findings.stderr


def test_publish_due_only_when_due_and_unknown_authority_is_404(ca_context):
    ctx = ca_context
    assert crl.publish_due(ctx) == 0  # ca init has just published every CRL
    before = crl.current(ctx, "services").number
    with ctx.sessions() as session, session.begin():
        session.execute(update(CRL).where(CRL.authority == "services").values(next_update=datetime.now(UTC) + timedelta(hours=5)))
    assert crl.publish_due(ctx) == 1
    assert crl.current(ctx, "services").number == before + 1
    assert crl.publish_due(ctx) == 0
    with pytest.raises(Problem) as raised:
        crl.current_der(ctx, "nobody")
    assert raised.value.status == 404


def test_concurrent_publications_get_distinct_consecutive_numbers(ca_context):
    ctx = ca_context
    start = crl.current(ctx, "people").number
    numbers, failures = [], []

    def publish_three():
        try:
            for _ in range(3):
                with ctx.sessions() as session, session.begin():
                    numbers.append(crl.publish(ctx, session, "people").number)
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=publish_three) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    assert sorted(numbers) == list(range(start + 1, start + 13))
    with ctx.sessions() as session:
        assert session.get(Authority, "people").crl_number == start + 12


# -- OCSP pre-signing -----------------------------------------------------------------------------


def test_every_issued_certificate_has_a_presigned_response_and_revocation_flips_it_in_the_same_transaction(ca_context):
    ctx = ca_context
    row, _ = issue(ctx)
    with ctx.sessions() as session:
        stored = session.get(OCSPResponse, row.serial)
        # Every certificate of an issuing CA has one, the responders' own included (they sign their first answer).
        issued = set(session.scalars(select(Certificate.serial).where(Certificate.authority.in_(["people", "services"]))))
        answered = set(session.scalars(select(OCSPResponse.serial)))
    assert issued == answered and len(issued) >= 4  # the leaf, two responders, the TSA
    response = status_of(ctx, stored.der)
    assert response.certificate_status is x509_ocsp.OCSPCertStatus.GOOD
    assert response.hash_algorithm.name == "sha1"  # RFC 5019 CertID
    assert response.serial_number == int(row.serial, 16)
    assert response.next_update_utc - response.this_update_utc == ocsp.VALIDITY

    # Inside the revoking transaction the pre-signed answer already says revoked ...
    with ctx.sessions() as session:
        session.begin()
        locked = session.get(Certificate, row.serial)
        locked.status, locked.revoked_at, locked.revocation_reason = "revoked", datetime.now(UTC), "keyCompromise"
        publication.certificate_revoked(ctx, session, locked)
        inside = session.get(OCSPResponse, row.serial).der
        assert status_of(ctx, inside).certificate_status is x509_ocsp.OCSPCertStatus.REVOKED
        session.rollback()
    # ... and a revocation rolled back leaves it good.
    with ctx.sessions() as session:
        assert status_of(ctx, session.get(OCSPResponse, row.serial).der).certificate_status is x509_ocsp.OCSPCertStatus.GOOD

    revocation.revoke(ctx, row.serial, "keyCompromise", actor="test")
    with ctx.sessions() as session:
        response = status_of(ctx, session.get(OCSPResponse, row.serial).der)
    assert response.certificate_status is x509_ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason is x509.ReasonFlags.key_compromise


def test_revoking_the_only_responder_withdraws_its_own_presigned_answer(ca_context):
    from ca import hierarchy

    ctx = ca_context
    with ctx.sessions() as session:
        responder = hierarchy.service_certificate(session, "ocsp-signing", "people")
    revocation.revoke(ctx, responder.serial, "keyCompromise", actor="test")
    with ctx.sessions() as session:
        # No responder is left to re-sign it, so no stale "good" may be served from it.
        assert session.get(OCSPResponse, responder.serial) is None
    assert int(responder.serial, 16) in {r.serial_number for r in x509.load_der_x509_crl(crl.current_der(ctx, "people"))}
    hierarchy.init_hierarchy(ctx, actor="test")  # issues a new responder, which signs its own first answer
    with ctx.sessions() as session:
        renewed = hierarchy.service_certificate(session, "ocsp-signing", "people")
        assert renewed.serial != responder.serial and session.get(OCSPResponse, renewed.serial) is not None


def test_refresh_due_resigns_what_is_due_and_fills_gaps(ca_context):
    ctx = ca_context
    due, _ = issue(ctx)
    fresh, _ = issue(ctx)
    gap, _ = issue(ctx)
    soon = datetime.now(UTC) + timedelta(hours=1)
    with ctx.sessions() as session, session.begin():
        session.execute(update(OCSPResponse).where(OCSPResponse.serial == due.serial).values(next_update=soon))
        session.execute(OCSPResponse.__table__.delete().where(OCSPResponse.serial == gap.serial))
        fresh_der = session.get(OCSPResponse, fresh.serial).der
    assert ocsp.refresh_due(ctx, batch=1) == 2  # batches of one: the loop must go on
    with ctx.sessions() as session:
        assert session.get(OCSPResponse, due.serial).next_update > soon + timedelta(hours=20)
        assert session.get(OCSPResponse, gap.serial) is not None
        assert session.get(OCSPResponse, fresh.serial).der == fresh_der
    assert ocsp.refresh_due(ctx) == 0


def test_scheduler_publishes_and_refreshes_and_survives_a_failing_run(ca_context, caplog):
    ctx = ca_context
    row, _ = issue(ctx)
    with ctx.sessions() as session, session.begin():
        session.execute(update(CRL).where(CRL.authority == "people").values(next_update=datetime.now(UTC)))
        session.execute(update(OCSPResponse).where(OCSPResponse.serial == row.serial).values(next_update=datetime.now(UTC)))
    number = crl.current(ctx, "people").number
    # A context whose HSM is missing: every signature fails, and the scheduler must carry on.
    broken = type(ctx)(sessions=ctx.sessions, keys=None, public_url=ctx.public_url, lookup_key=ctx.lookup_key)
    failing = schedule.start(broken, interval_seconds=0.2, first_delay=0)
    try:
        _wait(lambda: failing.runs >= 2)
    finally:
        failing.stop()
    assert failing.failures >= 2 and "failed" in caplog.text
    running = schedule.start(ctx, interval_seconds=0.2, first_delay=0)
    try:
        _wait(lambda: running.runs >= 1)
    finally:
        running.stop()
    assert crl.current(ctx, "people").number == number + 1
    with ctx.sessions() as session:
        assert session.get(OCSPResponse, row.serial).next_update > datetime.now(UTC) + timedelta(hours=20)


def _wait(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- the responder, in-process ---------------------------------------------------------------------


def test_responder_answers_good_revoked_unknown_unauthorized_and_echoes_nonces(ca_context):
    ctx = ca_context
    people = ctx.authority("people").certificate
    row, cert = issue(ctx)
    responder = ocsp.Responder(ctx)
    try:
        presigned = responder.answer(ocsp_request(cert, people))
        with ctx.sessions() as session:
            assert presigned.der == session.get(OCSPResponse, row.serial).der  # straight from the pre-signed row
        assert presigned.cacheable
        assert responder.answer(ocsp_request(cert, people)).der == presigned.der

        sha256 = status_of(ctx, responder.answer(ocsp_request(cert, people, hashes.SHA256())).der)
        assert sha256.hash_algorithm.name == "sha256" and sha256.certificate_status is x509_ocsp.OCSPCertStatus.GOOD

        with_nonce = ocsp_request(cert, people, nonce=b"0123456789abcdef")
        live = responder.answer(with_nonce)
        assert not live.cacheable
        assert responder.prepared(with_nonce) is None  # signed live every time: never served from the cache
        assert status_of(ctx, live.der).extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"0123456789abcdef"

        # A serial people never issued: unknown. One issued by services asked of people: unknown too.
        services_row = next(r for r in _rows(ctx) if r.authority == "services")
        for serial in (12345, int(services_row.serial, 16)):
            request = (
                x509_ocsp.OCSPRequestBuilder()
                .add_certificate_by_hash(*ocsp.issuer_hashes(people, "sha1"), serial, hashes.SHA1())
                .build()
                .public_bytes(serialization.Encoding.DER)
            )
            unknown = responder.answer(request)
            assert status_of(ctx, unknown.der).certificate_status is x509_ocsp.OCSPCertStatus.UNKNOWN and not unknown.cacheable
            assert responder.prepared(request) is None  # the serial may yet be issued

        # An issuer that is not ours, and our root (no delegated responder): unauthorized.
        foreign_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Elsewhere CA")])
        foreign = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(foreign_key.public_key())
            .serial_number(7)
            .not_valid_before(datetime.now(UTC))
            .not_valid_after(datetime.now(UTC) + timedelta(days=1))
            .sign(foreign_key, hashes.SHA256())
        )
        for request in (ocsp_request(cert, foreign), ocsp_request(people, ctx.authority("root").certificate)):
            assert responder.answer(request).der == ocsp.UNAUTHORIZED

        revocation.revoke(ctx, row.serial, "superseded", actor="test")
        time.sleep(ocsp.REVOCATION_DELAY)  # the documented delay (test_cached_answers_turn_revoked_within_the_delay...)
        for request in (ocsp_request(cert, people), ocsp_request(cert, people, hashes.SHA256())):
            revoked = status_of(ctx, responder.answer(request).der)
            assert revoked.certificate_status is x509_ocsp.OCSPCertStatus.REVOKED
            assert revoked.revocation_reason is x509.ReasonFlags.superseded
    finally:
        responder.close()


def _rows(ctx) -> list[Certificate]:
    with ctx.sessions() as session:
        return list(session.scalars(select(Certificate)))


def test_several_cert_ids_are_answered_together_signed_live(ca_context, tmp_path):
    ctx = ca_context
    people = ctx.authority("people").certificate
    (good, _), (gone, _) = issue(ctx), issue(ctx)
    revocation.revoke(ctx, gone.serial, "keyCompromise", actor="test")
    serials = [int(good.serial, 16), int(gone.serial, 16), 99]
    responder = ocsp.Responder(ctx)
    try:
        answer = responder.answer(_asn1_request(serials, *ocsp.issuer_hashes(people, "sha1"), nonce=b"nonce-1234"))
        # One signer per response: CertIDs of two of our CAs cannot be answered together.
        services = ctx.authority("services").certificate
        mixed = _asn1_request_ids([(1, *ocsp.issuer_hashes(people, "sha1")), (2, *ocsp.issuer_hashes(services, "sha1"))])
        assert responder.answer(mixed).der == ocsp.UNAUTHORIZED
    finally:
        responder.close()
    parsed = status_of(ctx, answer.der)
    assert [(single.serial_number, single.certificate_status) for single in parsed.responses] == [
        (serials[0], x509_ocsp.OCSPCertStatus.GOOD),
        (serials[1], x509_ocsp.OCSPCertStatus.REVOKED),
        (serials[2], x509_ocsp.OCSPCertStatus.UNKNOWN),
    ]
    assert list(parsed.responses)[1].revocation_reason is x509.ReasonFlags.key_compromise
    assert parsed.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"nonce-1234"

    # The response is assembled with asn1crypto, not cryptography's builder: let openssl and pkilint judge it.
    (tmp_path / "many.der").write_bytes(answer.der)
    (tmp_path / "root.pem").write_bytes(pem(ctx.authority("root").der))
    (tmp_path / "people.pem").write_bytes(pem(ctx.authority("people").der))
    said = openssl("ocsp", "-respin", "many.der", "-CAfile", "root.pem", "-verify_other", "people.pem", cwd=tmp_path)
    assert "Response verify OK" in said, said
    findings = lint("lint_ocsp_response", tmp_path / "many.der")
    assert findings.returncode == 0, findings.stdout + findings.stderr


MALFORMED = bytes.fromhex("30030a0101")


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b"\x30\x80", b"\x30" + b"\x82\x20\x00" + b"\x00" * 8192, b"\x30\x03\x02\x01\x01"],
    ids=["empty", "garbage", "indefinite", "oversized", "not-a-request"],
)
def test_malformed_requests_get_malformed_request(ca_context, body):
    responder = ocsp.Responder(ca_context)
    try:
        assert responder.answer(body).der == MALFORMED
        _, cert = issue(ca_context)
        whole = ocsp_request(cert, ca_context.authority("people").certificate)
        assert responder.answer(whole[:-3]).der == MALFORMED  # truncated
        assert responder.answer(whole + b"\x00").der == MALFORMED  # trailing bytes
        too_long = ocsp_request(cert, ca_context.authority("people").certificate, nonce=b"n" * 33)
        assert responder.answer(too_long).der == MALFORMED  # RFC 8954: nonces are at most 32 octets
        assert responder.answer(_asn1_request([-5])).der == MALFORMED  # no certificate has a negative serial
        assert responder.answer(_asn1_request(range(1, ocsp.MAX_CERT_IDS + 2))).der == MALFORMED  # too many CertIDs
    finally:
        responder.close()


def test_cached_answers_turn_revoked_within_the_revocation_delay_in_every_process(ca_context):
    """Two responders with their own caches stand for two workers (or nodes) sharing the database.

    Each answers the same request bytes from its prepared cache (no database read) until its reading of the
    CRL number is older than ocsp.REVOCATION_DELAY; a request made that long after the revocation committed
    is answered revoked by both, from the re-signed response.
    """
    ctx = ca_context
    people = ctx.authority("people").certificate
    row, cert = issue(ctx)
    workers = [ocsp.Responder(ctx), ocsp.Responder(ctx)]
    request = ocsp_request(cert, people)
    try:
        for worker in workers:
            for _ in range(3):
                assert status_of(ctx, worker.answer(request).der).certificate_status is x509_ocsp.OCSPCertStatus.GOOD
            prepared = worker.prepared(request)  # what the WSGI fast path serves these bytes from
            assert prepared is not None and status_of(ctx, prepared.body[0]).certificate_status is x509_ocsp.OCSPCertStatus.GOOD
        revocation.revoke(ctx, row.serial, "keyCompromise", actor="test")
        committed = time.monotonic()
        time.sleep(ocsp.REVOCATION_DELAY)
        for worker in workers:
            assert time.monotonic() - committed >= ocsp.REVOCATION_DELAY
            assert worker.prepared(request) is None  # the old answer no longer holds
            answer = status_of(ctx, worker.answer(request).der)
            assert answer.certificate_status is x509_ocsp.OCSPCertStatus.REVOKED
            assert answer.revocation_reason is x509.ReasonFlags.key_compromise
            prepared = worker.prepared(request)  # the revoked answer is the one prepared now
            assert prepared is not None and status_of(ctx, prepared.body[0]).certificate_status is x509_ocsp.OCSPCertStatus.REVOKED
    finally:
        for worker in workers:
            worker.close()


def test_a_responder_without_revocation_delay_reads_the_crl_number_on_every_request(ca_context):
    """revocation_delay=0: the former behaviour, every answer checked against the database (no window at all)."""
    ctx = ca_context
    people = ctx.authority("people").certificate
    row, cert = issue(ctx)
    responder = ocsp.Responder(ctx, revocation_delay=0)
    request = ocsp_request(cert, people)
    try:
        assert status_of(ctx, responder.answer(request).der).certificate_status is x509_ocsp.OCSPCertStatus.GOOD
        assert responder.prepared(request) is None  # a reading never holds: nothing is served without asking
        revocation.revoke(ctx, row.serial, "keyCompromise", actor="test")
        assert status_of(ctx, responder.answer(request).der).certificate_status is x509_ocsp.OCSPCertStatus.REVOKED
    finally:
        responder.close()


# -- over HTTP, against `hallmark serve`, judged by openssl and pkilint -----------------------------


def http_request(base: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> http.client.HTTPResponse:
    """One request on a new connection (so consecutive calls spread over the server's workers)."""
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    response.body = response.read()
    connection.close()
    return response


def openssl(*args, cwd: Path) -> str:
    result = subprocess.run(["openssl", *map(str, args)], check=False, capture_output=True, text=True, cwd=cwd, timeout=30)
    return result.stdout + result.stderr


@pytest.fixture
def pki_server(running_server) -> str:
    registered = http_request(running_server, "GET", "/pki/ca/root.crt").status
    assert registered == 200, "hallmark.app.create_app must register ca.status.api.bp"
    return running_server


def download_chain(base: str, where: Path) -> None:
    for name in ("root", "people", "services"):
        response = http_request(base, "GET", f"/pki/ca/{name}.crt")
        assert response.status == 200, "hallmark.app.create_app must register ca.status.api.bp"
        assert response.getheader("Content-Type") == "application/pkix-cert"
        (where / f"{name}.pem").write_bytes(pem(response.body))


def test_served_crls_verify_with_openssl_and_pass_pkilint(pki_server, tmp_path):
    running_server = pki_server
    download_chain(running_server, tmp_path)
    for name, chain in (("root", ["root"]), ("people", ["root", "people"]), ("services", ["root", "services"])):
        response = http_request(running_server, "GET", f"/pki/crl/{name}.crl")
        assert response.status == 200 and response.getheader("Content-Type") == "application/pkix-crl"
        (tmp_path / f"{name}.crl").write_bytes(response.body)
        (tmp_path / f"{name}-chain.pem").write_bytes(b"".join((tmp_path / f"{c}.pem").read_bytes() for c in chain))
        assert "verify OK" in openssl("crl", "-inform", "DER", "-in", f"{name}.crl", "-CAfile", f"{name}-chain.pem", "-noout", cwd=tmp_path)
        findings = lint("lint_crl", "-t", "CRL", "-p", "PKIX", tmp_path / f"{name}.crl")
        assert findings.returncode == 0, findings.stdout + findings.stderr
        max_age = int(response.getheader("Cache-Control").split("max-age=")[1].split(",")[0])
        assert 0 < max_age <= 3600 and response.getheader("Expires") and response.getheader("Last-Modified")
        again = http_request(running_server, "GET", f"/pki/crl/{name}.crl", headers={"If-None-Match": response.getheader("ETag")})
        assert again.status == 304 and again.body == b""

    missing = http_request(running_server, "GET", "/pki/crl/nobody.crl")
    assert missing.status == 404 and missing.getheader("Content-Type") == "application/problem+json"
    assert http_request(running_server, "GET", "/pki/ca/nobody.crt").status == 404


@pytest.mark.parametrize(
    "method, path, body, headers",
    [
        ("POST", "/pki/ocsp", b"", {}),
        ("POST", "/pki/ocsp", b"not an OCSP request", {"Content-Type": "application/ocsp-request"}),
        ("POST", "/pki/ocsp", bytes.fromhex("307330713070306f"), {}),  # truncated
        ("POST", "/pki/ocsp", b"\x30\x82\x24\x00" + b"\x00" * 9216, {}),  # over 8 KiB
        ("POST", "/pki/ocsp", iter([b"chunked ", b"garbage"]), {}),  # no Content-Length: chunked, through Flask
        ("GET", "/pki/ocsp/%%%", None, {}),
        ("GET", "/pki/ocsp/bm90IGFuIE9DU1AgcmVxdWVzdA==", None, {}),  # base64 of garbage
        ("GET", "/pki/ocsp/MEIw!!!", None, {}),
    ],
    ids=["empty", "garbage", "truncated", "oversized", "chunked", "bad-escape", "garbage-base64", "bad-base64"],
)
def test_malformed_ocsp_over_http_is_malformed_request_never_an_error(pki_server, method, path, body, headers):
    response = http_request(pki_server, method, path, body, headers)
    assert response.status == 200, response.body
    assert response.getheader("Content-Type") == "application/ocsp-response"
    assert response.body == MALFORMED


@pytest.fixture(scope="module")
def revoking_instance(tmp_path_factory):
    """An instance of its own, with one certificate issued by the CLI, for tests that revoke."""
    where = tmp_path_factory.mktemp("ocsp")
    instance = where / "instance"
    initialised_copy(instance)
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=x",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ],
        cwd=where,
        check=True,
        capture_output=True,
    )
    issued = run_hallmark(
        instance,
        "ca",
        "issue",
        "--profile",
        "person-auth",
        "--csr",
        str(where / "leaf.csr"),
        "--subject-id",
        RESIDENT,
        "--name",
        "张三",
        "--out",
        str(where / "leaf.pem"),
    )
    assert issued.returncode == 0, issued.stderr
    return instance, where


def test_openssl_ocsp_good_then_revoked_within_the_delay_on_two_nodes(revoking_instance):
    """Two `hallmark serve` processes (2 workers each) on one instance stand for two nodes."""
    instance, where = revoking_instance
    leaf = x509.load_pem_x509_certificate((where / "leaf.pem").read_bytes())
    servers = [start_server(instance, workers=2), start_server(instance, workers=2)]
    try:
        bases = [base for _, base in servers]
        download_chain(bases[0], where)
        people = x509.load_pem_x509_certificate((where / "people.pem").read_bytes())
        request = ocsp_request(leaf, people)

        def ask(base, *extra):
            return openssl(
                "ocsp", "-issuer", "people.pem", "-cert", "leaf.pem", "-url", f"{base}/pki/ocsp", "-CAfile", "root.pem", *extra, cwd=where
            )

        def statuses(base, times=8):
            # New connections each time, so both workers of the server answer.
            answers = [x509_ocsp.load_der_ocsp_response(http_request(base, "POST", "/pki/ocsp", request).body) for _ in range(times)]
            return {a.certificate_status for a in answers}

        for base in bases:
            for extra in ((), ("-no_nonce",)):  # a nonce (signed live), and none (pre-signed)
                said = ask(base, *extra)
                assert "leaf.pem: good" in said and "Response verify OK" in said, said
            assert statuses(base) == {x509_ocsp.OCSPCertStatus.GOOD}  # now in every worker's cache

        revoked = run_hallmark(instance, "ca", "revoke", format(leaf.serial_number, "x"), "--reason", "keyCompromise")
        assert revoked.returncode == 0, revoked.stderr
        time.sleep(ocsp.REVOCATION_DELAY)  # the documented delay: after it, every worker of both servers says revoked
        for base in bases:
            assert statuses(base) == {x509_ocsp.OCSPCertStatus.REVOKED}
            for extra in ((), ("-no_nonce",)):
                said = ask(base, *extra)
                assert "leaf.pem: revoked" in said and "Reason: keyCompromise" in said and "Response verify OK" in said, said

        said = ask(bases[1], "-no_nonce", "-respout", "presigned.der")
        said = ask(bases[1], "-respout", "nonce.der")
        for name in ("presigned.der", "nonce.der"):
            findings = lint("lint_ocsp_response", where / name)
            assert findings.returncode == 0, name + findings.stdout + findings.stderr
    finally:
        for process, _ in servers:
            stop_server(process)


def test_ocsp_get_with_rfc5019_caching_headers(revoking_instance):
    instance, where = revoking_instance
    leaf = x509.load_pem_x509_certificate((where / "leaf.pem").read_bytes())
    process, base = start_server(instance, workers=1)
    try:
        download_chain(base, where)
        people = x509.load_pem_x509_certificate((where / "people.pem").read_bytes())
        encoded = base64.b64encode(ocsp_request(leaf, people)).decode()
        spellings = {
            urllib.parse.quote(encoded, safe=""),  # RFC 6960 A.1: base64, then URL-encoded
            encoded,  # '+' and '/' left as they are
            encoded.rstrip("="),  # padding dropped
            encoded.replace("+", "-").replace("/", "_"),  # the URL-safe alphabet
        }
        bodies = set()
        for spelling in spellings:
            response = http_request(base, "GET", f"/pki/ocsp/{spelling}")
            assert response.status == 200 and response.getheader("Content-Type") == "application/ocsp-response"
            parsed = x509_ocsp.load_der_ocsp_response(response.body)
            assert parsed.serial_number == leaf.serial_number
            cache_control = response.getheader("Cache-Control")
            assert "public" in cache_control and "no-transform" in cache_control and "must-revalidate" in cache_control
            max_age = int(cache_control.split("max-age=")[1].split(",")[0])
            assert abs(max_age - (parsed.next_update_utc - datetime.now(UTC)).total_seconds()) < 5
            assert response.getheader("Last-Modified") and response.getheader("Expires") and response.getheader("ETag")
            bodies.add(response.body)
            etag = response.getheader("ETag")
        assert len(bodies) == 1  # every spelling is the same request, answered from the same cache entry
        assert http_request(base, "GET", f"/pki/ocsp/{encoded}", headers={"If-None-Match": etag}).status == 304
        nonce = base64.b64encode(ocsp_request(leaf, people, nonce=b"1234567890123456")).decode()
        live = http_request(base, "GET", f"/pki/ocsp/{urllib.parse.quote(nonce, safe='')}")
        assert live.getheader("Cache-Control") == "no-store" and live.getheader("ETag") is None
    finally:
        stop_server(process)


def test_threads_share_one_responder_and_see_a_revocation_within_the_delay(ca_context):
    """Worker threads as granian runs them: cached, live (nonce) and SHA-256 answers, a revocation midway."""
    # Four threads sign hundreds of live answers a second: far past the per-client limit of signed answers, whose
    # tryLater test_limits covers. Here the limit must not be what answers.
    ctx = dataclasses.replace(
        ca_context, settings=dataclasses.replace(ca_context.settings, ocsp_signed_burst=10**9, ocsp_signed_per_minute=10**9)
    )
    people = ctx.authority("people").certificate
    row, cert = issue(ctx)
    others = [issue(ctx)[1] for _ in range(3)]
    requests = [ocsp_request(c, people, algorithm) for c in (cert, *others) for algorithm in (hashes.SHA1(), hashes.SHA256())]
    requests.append(ocsp_request(cert, people, nonce=b"thread-nonce-123"))
    revoked_at = []  # monotonic time when revoke() returned, i.e. after its commit
    seen = []  # (started, status) for every answer about `cert`
    failures = []
    responder = ocsp.Responder(ctx)

    stop = threading.Event()

    def work(n):
        try:
            i = 0
            while not stop.is_set():
                request = requests[(n + i) % len(requests)]
                i += 1
                started = time.monotonic()
                response = status_of(ctx, responder.answer(request).der)
                if response.serial_number == cert.serial_number:
                    seen.append((started, response.certificate_status))
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.2)
        revocation.revoke(ctx, row.serial, "keyCompromise", actor="test")
        revoked_at.append(time.monotonic())
        time.sleep(ocsp.REVOCATION_DELAY + 0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        responder.close()
    assert not failures, failures
    before = {status for started, status in seen if started < revoked_at[0]}
    after = [status for started, status in seen if started >= revoked_at[0] + ocsp.REVOCATION_DELAY]
    assert x509_ocsp.OCSPCertStatus.GOOD in before
    assert after and set(after) == {x509_ocsp.OCSPCertStatus.REVOKED}
