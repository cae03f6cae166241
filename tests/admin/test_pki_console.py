"""The CA officer's PKI pages over HTTP against a real server: issue from a CSR, revoke an end-entity certificate (the
freshly fetched CRL lists it, checked with openssl), health, the trust store, and the two four-eyes operations
(revoking a CA certificate, adding a trust anchor): the proposer cannot approve, a second CA officer does, a replayed
approval is refused. Bad input is a readable 4xx; other roles are refused (403, audited).
"""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from admin import roles
from tests.admin.conftest import DEPT_A

pytestmark = pytest.mark.slow


def csr_pem(common_name: str = "pki.example") -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
    return csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def external_ca(name: str) -> str:
    """A self-signed CA certificate of an 'external' CA (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"), x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def serial_from(response) -> str:
    assert response.status_code == 303, response.text[:800]
    return re.match(r"/admin/pki/certificates/([0-9a-f]+)\?notice=", response.headers["Location"]).group(1)


def proposal_id(response) -> str:
    assert response.status_code == 303, response.text[:800]
    return re.match(r"/admin/proposals/([0-9a-f]{32})\?notice=proposed$", response.headers["Location"]).group(1)


def crl_lists(console, authority: str, serial: str) -> bool:
    """The CRL as the server publishes it now, read by openssl: does it list ``serial``?"""
    import requests

    der = requests.get(f"{console.base}/pki/crl/{authority}.crl", timeout=30).content
    text = subprocess.run(["openssl", "crl", "-inform", "DER", "-noout", "-text"], input=der, capture_output=True, check=True).stdout
    listed = {int(found, 16) for found in re.findall(r"Serial Number: ([0-9A-Fa-f]+)", text.decode())}
    return int(serial, 16) in listed


@pytest.fixture(scope="module")
def officers(console):
    first = console.person((roles.CA_OFFICER, None), name="证书甲")
    second = console.person((roles.CA_OFFICER, None), name="证书乙")
    return first, second


def test_a_ca_officer_issues_from_a_csr_views_and_revokes_and_the_crl_says_so(console, officers):
    officer = console.browser(officers[0])
    assert officer.sign_in().status_code == 200
    assert "/admin/pki" in officer.get("/admin").text  # the nav entry

    issued = officer.post("/admin/pki/issue", {"profile": "server-tls", "name": "pki", "san": "pki.example", "csr": csr_pem()},
                          csrf_from="/admin/pki/issue")  # fmt: skip
    serial = serial_from(issued)
    page = officer.get(f"/admin/pki/certificates/{serial}")
    assert page.status_code == 200 and "pki.example" in page.text and 'data-status="valid"' in page.text
    listed = officer.get("/admin/pki?profile=server-tls")
    assert serial in listed.text
    assert console.audit("ca.certificate.issued", serial)
    assert not crl_lists(console, "services", serial)

    revoked = officer.post(
        f"/admin/pki/certificates/{serial}/revoke", {"reason": "keyCompromise"}, csrf_from=f"/admin/pki/certificates/{serial}"
    )
    assert serial_from(revoked) == serial
    page = officer.get(f"/admin/pki/certificates/{serial}")
    assert 'data-status="revoked"' in page.text and 'data-reason="keyCompromise"' in page.text
    assert [e for e in console.audit("ca.certificate.revoked", serial) if e.actor == f"account:{officers[0].account_id}"]
    assert crl_lists(console, "services", serial)

    # Again: 409, a readable page, nothing changed.
    again = officer.post(
        f"/admin/pki/certificates/{serial}/revoke", {"reason": "superseded"}, csrf_from=f"/admin/pki/certificates/{serial}"
    )
    assert again.status_code == 409 and 'role="alert"' in again.text


def test_bad_input_is_a_readable_4xx_and_recorded(console, officers):
    officer = console.browser(officers[0])
    assert officer.sign_in().status_code == 200
    bad_csr = officer.post("/admin/pki/issue", {"profile": "server-tls", "name": "x", "san": "x.example", "csr": "not a csr"},
                           csrf_from="/admin/pki/issue")  # fmt: skip
    assert bad_csr.status_code == 400 and 'role="alert"' in bad_csr.text and "<html" in bad_csr.text.lower()
    unknown = officer.get("/admin/pki/certificates/abcdef0123456789")
    assert unknown.status_code == 404 and 'role="alert"' in unknown.text
    not_hex = officer.get("/admin/pki/certificates/zz-not-a-serial")
    assert not_hex.status_code == 400
    bad_reason = officer.post("/admin/pki/certificates/abcdef0123456789/revoke", {"reason": "nope"}, csrf_from="/admin/pki")
    assert 400 <= bad_reason.status_code < 500
    bad_cursor = officer.get("/admin/pki?after=garbage")
    assert bad_cursor.status_code == 400
    assert console.audit("admin.pki.refused")
    no_csrf = officer.http.post(officer.url("/admin/pki/issue"), data={"profile": "server-tls"}, allow_redirects=False, timeout=30)
    assert no_csrf.status_code in (400, 403)


def test_health_and_trust_store_pages(console, officers):
    officer = console.browser(officers[0])
    assert officer.sign_in().status_code == 200
    health = officer.get("/admin/pki/health")
    assert health.status_code == 200
    assert 'data-authority="services"' in health.text and 'data-service="tsa-services"' in health.text
    assert 'data-state="ok"' in health.text and 'data-state="failed"' not in health.text
    # The live self-checks: an OCSP answer per issuing authority and a timestamp token, signed in the server.
    assert health.text.count('data-live="ok"') >= 2 and 'data-live="failed"' not in health.text, health.text[-3000:]
    trust = officer.get("/admin/pki/trust")
    assert trust.status_code == 200


def test_wrong_roles_are_refused(console):
    keeper = console.person((roles.SEAL_KEEPER, DEPT_A))
    browser = console.browser(keeper)
    assert browser.sign_in().status_code == 200
    for path in ("/admin/pki", "/admin/pki/health", "/admin/pki/trust", "/admin/pki/issue"):
        assert browser.get(path).status_code == 403
    assert browser.post("/admin/pki/issue", {"profile": "server-tls"}).status_code == 403
    assert [e for e in console.audit("admin.refused", "/admin/pki/issue") if e.actor == f"account:{keeper.account_id}"]


def _approve(console, browser, pid: str):
    return browser.post(f"/admin/proposals/{pid}/approve", {"reason": "同意"}, csrf_from=f"/admin/proposals/{pid}")


def test_four_eyes_revoke_a_cross_certificate(console, officers):
    from ca import crosscert, trust
    from ca.models import Certificate

    ca = console.services["ca"]
    crosscert.cross_certify(ca, external_ca("Cross Test CA").encode(), path_length=0, permitted_subtrees=[], actor="test")
    fingerprint = trust.list_anchors(ca)[-1].fingerprint
    cross = trust.cross_certificates_for
    with ca.sessions() as session:
        external = x509.load_der_x509_certificate(session.get(type(trust.list_anchors(ca)[-1]), fingerprint).der)
        row = cross(session, external)[0]
        serial = row.serial
    first, second = (console.browser(p) for p in officers)
    assert first.sign_in().status_code == 200 and second.sign_in().status_code == 200

    # End-entity revocation refuses a CA certificate: it needs four eyes.
    direct = first.post(
        f"/admin/pki/certificates/{serial}/revoke", {"reason": "cACompromise"}, csrf_from=f"/admin/pki/certificates/{serial}"
    )
    assert direct.status_code == 409
    assert first.confirm_with_usb_key(f"/admin/pki/certificates/{serial}").status_code == 200
    pid = proposal_id(first.post(f"/admin/pki/certificates/{serial}/propose-revoke", {"reason": "cACompromise", "note": "对方密钥泄露"},
                                 csrf_from=f"/admin/pki/certificates/{serial}"))  # fmt: skip
    with ca.sessions() as session:
        assert session.get(Certificate, serial).status == "valid"
    own = _approve(console, first, pid)
    assert own.status_code == 403
    with ca.sessions() as session:
        assert session.get(Certificate, serial).status == "valid"
    assert second.confirm_with_usb_key(f"/admin/proposals/{pid}").status_code == 200
    done = _approve(console, second, pid)
    assert done.status_code == 303 and done.headers["Location"] == f"/admin/proposals/{pid}?notice=approved", done.text[:500]
    with ca.sessions() as session:
        assert session.get(Certificate, serial).status == "revoked"
    assert [e for e in console.audit("ca.certificate.revoked", serial) if e.actor == f"account:{officers[1].account_id}"]
    assert crl_lists(console, "root", serial)
    assert _approve(console, second, pid).status_code == 409  # replay


def test_four_eyes_add_a_trust_anchor(console, officers):
    from ca import trust

    ca = console.services["ca"]
    pem = external_ca("Anchor Test CA")
    first, second = (console.browser(p) for p in officers)
    assert first.sign_in().status_code == 200 and second.sign_in().status_code == 200
    assert first.confirm_with_usb_key("/admin/pki/trust").status_code == 200

    bad = first.post("/admin/pki/trust/propose", {"pem": "-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----", "reason": "r"},
                     csrf_from="/admin/pki/trust")  # fmt: skip
    assert 400 <= bad.status_code < 500 and 'role="alert"' in bad.text

    pid = proposal_id(first.post("/admin/pki/trust/propose", {"pem": pem, "reason": "省级 CA 互认", "revocation_policy": "hard"},
                                 csrf_from="/admin/pki/trust"))  # fmt: skip
    subjects = [row.subject for row in trust.list_anchors(ca)]
    assert "CN=Anchor Test CA,C=CN" not in subjects
    assert _approve(console, first, pid).status_code == 403
    assert second.confirm_with_usb_key(f"/admin/proposals/{pid}").status_code == 200
    done = _approve(console, second, pid)
    assert done.status_code == 303, done.text[:500]
    anchors = {row.subject: row for row in trust.list_anchors(ca)}
    assert "CN=Anchor Test CA,C=CN" in anchors and anchors["CN=Anchor Test CA,C=CN"].added_by == f"account:{officers[1].account_id}"
    assert "Anchor Test CA" in second.get("/admin/pki/trust").text
    assert _approve(console, second, pid).status_code == 409
