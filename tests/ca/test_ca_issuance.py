"""Issuance from CSRs, judged by openssl and pkilint; bad input refused with nothing stored."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import func, select

from ca import hierarchy, identity, issuance, profiles, queries, revocation
from ca.models import Authority, Certificate
from core import audit
from core.problems import Problem
from tests.conftest import run_hallmark

RESIDENT = "11010519491231002X"
CREDIT = "91350100M000100Y43"
BIN = Path(sys.executable).parent

IDENTITIES = {
    "person-auth": issuance.Identity(name="张三", subject_id=RESIDENT),
    "person-sign": issuance.Identity(name="张三", subject_id=RESIDENT),
    "enterprise-auth": issuance.Identity(name="泉州示例科技有限公司", subject_id=CREDIT),
    "enterprise-sign": issuance.Identity(name="泉州示例科技有限公司", subject_id=CREDIT),
    "department-seal": issuance.Identity(name="泉州市市场监督管理局", subject_id=CREDIT),
    "server-tls": issuance.Identity(name="泉州市网上办事大厅", sans=("hall.example.gov.cn", "127.0.0.1")),
}


def csr_for(key=None, cn="ignored by the CA") -> tuple[bytes, object]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM), key


def pem(cert_or_der) -> bytes:
    if isinstance(cert_or_der, bytes):
        cert_or_der = x509.load_der_x509_certificate(cert_or_der)
    return cert_or_der.public_bytes(serialization.Encoding.PEM)


def write_chain(ctx, tmp_path: Path, issuer: str) -> tuple[Path, Path]:
    root = tmp_path / "root.pem"
    root.write_bytes(pem(ctx.authority("root").der))
    inter = tmp_path / f"{issuer}.pem"
    inter.write_bytes(pem(ctx.authority(issuer).der))
    return root, inter


def lint(tool: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), "lint", "-s", "WARNING", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("profile_name", sorted(IDENTITIES))
def test_every_profile_passes_openssl_strict_and_pkilint(ca_context, tmp_path, profile_name):
    csr, _ = csr_for()
    row, cert = issuance.issue(ca_context, profile_name, csr, IDENTITIES[profile_name], actor="test")
    profile = profiles.get(profile_name)
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(pem(cert))
    root, inter = write_chain(ca_context, tmp_path, profile.issuer)
    purpose = {
        "server-tls": ["-purpose", "sslserver"],
        "person-auth": ["-purpose", "sslclient"],
        "enterprise-auth": ["-purpose", "sslclient"],
    }
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", *purpose.get(profile_name, []), "-CAfile", root, "-untrusted", inter, leaf],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result.stdout + result.stderr
    findings = lint("lint_pkix_cert", leaf)
    assert findings.returncode == 0, findings.stdout + findings.stderr
    chain = lint("lint_pkix_signer_signee_cert_chain", inter, leaf)
    assert chain.returncode == 0, chain.stdout + chain.stderr
    # The subject comes from vouched identity data, never from the CSR.
    assert "ignored by the CA" not in cert.subject.rfc4514_string()
    assert row.serial == format(cert.serial_number, "x") and cert.serial_number.bit_length() <= 159
    stored = queries.get(ca_context, row.serial)
    assert stored.der == cert.public_bytes(serialization.Encoding.DER)


def test_ca_and_service_certificates_pass_pkilint(ca_context, tmp_path):
    with ca_context.sessions() as session:
        for name in ("root", "people", "services"):
            der = session.get(Authority, name).certificate
            path = tmp_path / f"{name}.pem"
            path.write_bytes(pem(der))
            findings = lint("lint_pkix_cert", path)
            assert findings.returncode == 0, f"{name}: {findings.stdout}"
        tsa = hierarchy.service_certificate(session, "timestamping", "services")
        ocsp_people = hierarchy.service_certificate(session, "ocsp-signing", "people")
    for row in (tsa, ocsp_people):
        path = tmp_path / f"{row.profile}.pem"
        path.write_bytes(pem(row.der))
        assert lint("lint_pkix_cert", path).returncode == 0
    tsa_cert = x509.load_der_x509_certificate(tsa.der)
    eku = tsa_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [x509.oid.ExtendedKeyUsageOID.TIME_STAMPING]
    root_cert = x509.load_der_x509_certificate(ca_context.authority("root").der)
    assert isinstance(root_cert.public_key(), ec.EllipticCurvePublicKey) and root_cert.public_key().key_size == 384
    assert (root_cert.not_valid_after_utc - root_cert.not_valid_before_utc).days >= 365 * 20


def test_identifiers_in_standard_attribute_and_chinese_extensions(ca_context):
    csr, _ = csr_for(rsa.generate_private_key(65537, 2048))
    _, person = issuance.issue(ca_context, "person-auth", csr, IDENTITIES["person-auth"], actor="test")
    assert person.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == f"IDCCN-{RESIDENT}"
    ext = person.extensions.get_extension_for_oid(identity.OID_RESIDENT_ID_2023)
    assert RESIDENT.encode() in ext.value.value and not ext.critical
    csr, _ = csr_for()
    _, enterprise = issuance.issue(ca_context, "enterprise-sign", csr, IDENTITIES["enterprise-sign"], actor="test")
    assert enterprise.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "泉州示例科技有限公司"
    assert enterprise.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)[0].value == f"NTRCN-{CREDIT}"
    for oid in (identity.OID_BUSINESS_REGISTRATION, identity.OID_CREDIT_CODE_2023):
        assert CREDIT.encode() in enterprise.extensions.get_extension_for_oid(oid).value.value
    assert b"M000100Y4" in enterprise.extensions.get_extension_for_oid(identity.OID_ORGANISATION_CODE).value.value
    ku = enterprise.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.content_commitment and not ku.digital_signature


def test_lookup_by_subject_id_and_status_with_masked_output(ca_context):
    for _ in range(2):
        issuance.issue(ca_context, "person-auth", csr_for()[0], IDENTITIES["person-auth"], actor="test")
    issuance.issue(ca_context, "enterprise-auth", csr_for()[0], IDENTITIES["enterprise-auth"], actor="test")
    mine = queries.search(ca_context, subject_id=RESIDENT.lower())
    assert len(mine) == 2 and all(r.subject_id_masked == "110***********002X" for r in mine)
    assert all(RESIDENT not in r.subject for r in mine)
    revocation.revoke(ca_context, mine[0].serial, "superseded", actor="test")
    assert [r.serial for r in queries.search(ca_context, subject_id=RESIDENT, status="revoked")] == [mine[0].serial]
    assert [r.serial for r in queries.search(ca_context, subject_id=RESIDENT, status="valid")] == [mine[1].serial]
    assert len(queries.search(ca_context, subject_id=CREDIT)) == 1


def _count(ctx) -> int:
    with ctx.sessions() as session:
        return session.scalar(select(func.count()).select_from(Certificate))


@pytest.mark.parametrize(
    "profile_name, csr_kind, identity, status, detail",
    [
        ("person-auth", "garbage", IDENTITIES["person-auth"], 400, "not a PKCS#10 request"),
        ("person-auth", "bad-signature", IDENTITIES["person-auth"], 400, "does not verify"),
        ("person-auth", "oversized", IDENTITIES["person-auth"], 413, "larger than"),
        ("person-auth", "p521", IDENTITIES["person-auth"], 422, "does not accept ec-secp521r1 keys"),
        ("person-auth", "rsa1024", IDENTITIES["person-auth"], 422, "does not accept rsa-1024 keys"),
        ("no-such-profile", "ok", IDENTITIES["person-auth"], 422, "unknown profile"),
        ("ocsp-signing", "ok", IDENTITIES["person-auth"], 422, "issued by 'hallmark ca init' only"),
        ("person-auth", "ok", issuance.Identity(name="张三", subject_id="110105194912310021"), 422, "check character"),
        ("enterprise-auth", "ok", issuance.Identity(name="x", subject_id="91350100M000100Y44"), 422, "check character"),
        ("person-auth", "ok", issuance.Identity(name="", subject_id=RESIDENT), 400, "name is required"),
        ("person-auth", "ok", issuance.Identity(name="名" * 65, subject_id=RESIDENT), 400, "longer than 64"),
        ("server-tls", "ok", issuance.Identity(name="Hall", sans=("not a host!",)), 400, "neither a DNS name"),
        ("server-tls", "ok", issuance.Identity(name="Hall"), 400, "at least one DNS name"),
    ],
)
def test_bad_requests_are_refused_and_nothing_is_stored(ca_context, profile_name, csr_kind, identity, status, detail):
    if csr_kind == "garbage":
        data = b"hello"
    elif csr_kind == "oversized":
        data = b"A" * (issuance.MAX_CSR_BYTES + 1)
    elif csr_kind == "bad-signature":
        der = bytearray(x509.load_pem_x509_csr(csr_for()[0]).public_bytes(serialization.Encoding.DER))
        der[-3] ^= 0x55
        data = bytes(der)
    elif csr_kind == "p521":
        data = csr_for(ec.generate_private_key(ec.SECP521R1()))[0]
    elif csr_kind == "rsa1024":
        data = csr_for(rsa.generate_private_key(65537, 1024))[0]
    else:
        data = csr_for()[0]
    before = _count(ca_context)
    with pytest.raises(Problem) as caught:
        issuance.issue(ca_context, profile_name, data, identity, actor="test")
    assert caught.value.status == status and detail in caught.value.detail, caught.value.detail
    assert _count(ca_context) == before


def test_revocation_rules(ca_context):
    row, _ = issuance.issue(ca_context, "person-sign", csr_for()[0], IDENTITIES["person-sign"], actor="test")
    with pytest.raises(Problem, match="unknown revocation reason"):
        revocation.revoke(ca_context, row.serial, "certificateHold", actor="test")
    with pytest.raises(Problem) as unknown:
        revocation.revoke(ca_context, "0abc", "keyCompromise", actor="test")
    assert unknown.value.status == 404
    with pytest.raises(Problem) as malformed:
        revocation.revoke(ca_context, "not-hex", "keyCompromise", actor="test")
    assert malformed.value.status == 400
    colon_form = ":".join(row.serial[i : i + 2] for i in range(0, len(row.serial), 2)).upper()
    revoked = revocation.revoke(ca_context, colon_form, "keyCompromise", actor="test")
    assert revoked.status == "revoked" and revoked.revocation_reason == "keyCompromise"
    with pytest.raises(Problem) as again:
        revocation.revoke(ca_context, row.serial, "keyCompromise", actor="test")
    assert again.value.status == 409
    with ca_context.sessions() as session:
        assert audit.verify(session).ok
        actions = session.scalars(select(audit.AuditEvent.action).order_by(audit.AuditEvent.seq.desc()).limit(2)).all()
    assert actions[0] == "ca.certificate.revoked"


# -- JSON API and CLI over real processes ---------------------------------------------------


@pytest.fixture
def api_app(tmp_path, migrated, key_manager):
    """The real app factory on a database with a CA, accepting tokens from a test key."""
    from hallmark.app import create_app
    from tests.conftest import app_settings

    engine, _ = migrated
    settings = app_settings(tmp_path, engine.url.render_as_string(hide_password=False))
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    app = create_app(settings, bearer_jwks={"keys": [key.as_dict(private=False)]})
    hierarchy.init_hierarchy(app.extensions["hallmark.services"].ca, actor="test")

    def token(scope):
        claims = {
            "iss": "https://id.test",
            "aud": "https://id.test/api/ca",
            "sub": "hall-1",
            "client_id": "hall-1",
            "scope": scope,
            "exp": int(time.time()) + 300,
        }
        return {"Authorization": "Bearer " + jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}, claims, key)}

    yield app.test_client(), token
    app.extensions["hallmark.services"].close()


def test_api_issue_lookup_list_revoke(api_app):
    client, token = api_app
    body = {"profile": "person-auth", "csr": csr_for()[0].decode(), "subject_id": RESIDENT, "name": "李四"}
    assert client.post("/api/ca/certificates", json=body).status_code == 401
    assert client.post("/api/ca/certificates", json=body, headers=token("ca:read")).status_code == 403
    created = client.post("/api/ca/certificates", json=body, headers=token("ca:issue"))
    assert created.status_code == 201, created.get_json()
    issued = created.get_json()
    assert issued["subject_id"] == "110***********002X" and issued["status"] == "valid"
    assert issued["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert created.headers["Location"] == f"/api/ca/certificates/{issued['serial']}"
    got = client.get(f"/api/ca/certificates/{issued['serial']}", headers=token("ca:read")).get_json()
    assert got["serial"] == issued["serial"]
    listed = client.get(f"/api/ca/certificates?subject_id={RESIDENT}", headers=token("ca:read")).get_json()
    assert [c["serial"] for c in listed["certificates"]] == [issued["serial"]]
    revoke_url = f"/api/ca/certificates/{issued['serial']}/revoke"
    assert client.post(revoke_url, json={"reason": "keyCompromise"}, headers=token("ca:issue")).status_code == 403
    revoked = client.post(revoke_url, json={"reason": "keyCompromise"}, headers=token("ca:revoke"))
    assert revoked.status_code == 200 and revoked.get_json()["status"] == "revoked"
    again = client.post(revoke_url, json={"reason": "keyCompromise"}, headers=token("ca:revoke"))
    assert again.status_code == 409 and again.content_type == "application/problem+json"


@pytest.mark.parametrize(
    "body, status",
    [
        ("not json", 400),
        ({"profile": "person-auth"}, 400),
        ({"profile": "person-auth", "csr": 5, "name": "x"}, 400),
        (
            {
                "profile": "person-auth",
                "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----",
                "name": "x",
                "subject_id": RESIDENT,
            },
            400,
        ),
        ({"profile": "server-tls", "csr": "x", "name": "x", "san": "a.example"}, 400),
        ({"profile": "person-auth", "csr": "x", "name": "x", "subject_id": 42}, 400),
    ],
)
def test_api_bad_input_is_problem_json(api_app, body, status):
    client, token = api_app
    kwargs = {"data": body, "content_type": "application/json"} if isinstance(body, str) else {"json": body}
    response = client.post("/api/ca/certificates", headers=token("ca:issue"), **kwargs)
    assert response.status_code == status
    assert response.content_type == "application/problem+json" and response.get_json()["detail"]


def test_cli_issue_and_revoke(initialised_instance, tmp_path):
    key = tmp_path / "key.pem"
    csr = tmp_path / "req.pem"
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
            "/CN=whatever",
            "-keyout",
            key,
            "-out",
            csr,
        ],
        check=True,
        capture_output=True,
    )
    out = tmp_path / "cert.pem"
    issued = run_hallmark(
        initialised_instance,
        "ca",
        "issue",
        "--profile",
        "person-auth",
        "--csr",
        str(csr),
        "--subject-id",
        RESIDENT,
        "--name",
        "王五",
        "--out",
        str(out),
    )
    assert issued.returncode == 0, issued.stderr
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    serial = format(cert.serial_number, "x")
    assert serial in issued.stderr and RESIDENT not in issued.stderr
    listed = run_hallmark(initialised_instance, "ca", "list", "--subject-id", RESIDENT)
    assert serial in listed.stdout and RESIDENT not in listed.stdout
    revoked = run_hallmark(initialised_instance, "ca", "revoke", serial, "--reason", "keyCompromise")
    assert revoked.returncode == 0 and f"revoked {serial} (keyCompromise)" in revoked.stdout
    again = run_hallmark(initialised_instance, "ca", "revoke", serial, "--reason", "keyCompromise")
    assert again.returncode == 1 and "already revoked" in again.stderr and "Traceback" not in again.stderr
    bad = run_hallmark(
        initialised_instance,
        "ca",
        "issue",
        "--profile",
        "person-auth",
        "--csr",
        str(csr),
        "--subject-id",
        "110105194912310021",
        "--name",
        "王五",
    )
    assert bad.returncode == 1 and "check character" in bad.stderr and "Traceback" not in bad.stderr
    again_init = run_hallmark(initialised_instance, "ca", "init")
    assert again_init.returncode == 0 and "nothing changed" in again_init.stdout
