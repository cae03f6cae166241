"""USB-key enrolment end to end: ``hallmark-key enroll`` against ``hallmark serve``.

A SoftHSM2 token of its own plays the USB key; the access token comes from the real
login flow over HTTP (the public client ``hallmark-key`` that ``hallmark init``
registers, PKCE, loopback redirect on any port). The certificate read back from the
token by OpenSC's ``pkcs11-tool`` must pass ``openssl verify`` against the CA chain.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import func, select

from ca.models import Certificate
from tests.conftest import run_hallmark, start_server, stop_server
from tests.keyagent_fixtures import ZHANG_SAN_ID, Hall, access_token, log_in_through_browser, make_usb_key, new_resident_id

pytestmark = pytest.mark.slow
BASIC_CB = "http://127.0.0.1:8009/basic-cb"


@pytest.fixture(scope="module")
def hall(tmp_path_factory):
    instance = tmp_path_factory.mktemp("enrol-instance")
    init = run_hallmark(instance, "init")
    assert init.returncode == 0, init.stderr
    assert "hallmark-key" in init.stdout
    # A public tool without the real-name minimum, to obtain basic-level and scope-less tokens.
    added = run_hallmark(
        instance,
        "idp",
        "client",
        "add",
        "--name",
        "测试工具",
        "--client-id",
        "basic-tool",
        "--type",
        "public",
        "--redirect-uri",
        BASIC_CB,
        "--scope",
        "openid cert:enrol",
        "--first-party",
        "--json",
    )
    assert added.returncode == 0, added.stderr
    machine = run_hallmark(
        instance,
        "idp",
        "client",
        "add",
        "--name",
        "审批系统",
        "--client-id",
        "approval",
        "--grant",
        "client_credentials",
        "--scope",
        "cert:enrol",
        "--json",
    )
    assert machine.returncode == 0, machine.stderr
    process, base = start_server(instance)
    world = Hall(instance, base)
    world.approval_secret = json.loads(machine.stdout)["client_secret"]
    yield world
    stop_server(process)
    world.close()


def certificate_count(hall: Hall) -> int:
    with hall.sessions() as db:
        return db.scalar(select(func.count()).select_from(Certificate))


def software_csr(name: str = "张三", curve=ec.SECP256R1()) -> str:
    key = ec.generate_private_key(curve)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def post_enrolment(hall: Hall, token: str, body: dict) -> requests.Response:
    return requests.post(hall.base + "/api/idp/enrolments", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_enroll_stores_a_certificate_openssl_verifies(hall, tmp_path):
    resident_id = new_resident_id()
    username = hall.account(resident_id=resident_id, legal_name="张三")
    token = access_token(hall.base, username, port=51234)
    usb = make_usb_key(tmp_path / "usb")
    result = usb.run(
        "enroll",
        "--profile",
        "person-auth",
        "--name",
        "张三",
        "--resident-id",
        resident_id,
        "--idp",
        hall.base,
        "--access-token",
        token["access_token"],
        "--pin-file",
        str(usb.pin_file),
    )
    assert result.returncode == 0, result.stderr + result.stdout
    serial = re.search(r"enrolled person-auth certificate ([0-9a-f]+)", result.stdout).group(1)
    assert usb.pin not in result.stdout + result.stderr

    listed = json.loads(usb.run("list", "--json").stdout)["tokens"][0]
    leaf = [c for c in listed["certificates"] if not c["ca"]]
    assert len(leaf) == 1 and leaf[0]["has_key"] and "IDCCN-" + resident_id[:3] + "*" * 11 + resident_id[-4:] in leaf[0]["subject"]
    ca_subjects = sorted(c["subject"] for c in listed["certificates"] if c["ca"])
    assert len(ca_subjects) == 2 and any("Root CA" in s for s in ca_subjects) and any("People" in s for s in ca_subjects)
    key_id = leaf[0]["id"]
    assert [k["certificate"] for k in listed["keys"]] == [leaf[0]["subject"]]

    # The private key was made inside the token and can never leave it (OpenSC's view).
    objects = usb.pkcs11_tool("--login", "--pin", usb.pin, "--list-objects")
    private = objects.split("Private Key Object")[1].split("Object;")[0]
    assert "sensitive" in private and "never extractable" in private and "local" in private and key_id in private

    # The certificate read back from the token by pkcs11-tool, checked by openssl against the CA chain.
    der = usb.read_certificate_der(key_id)
    certificate = x509.load_der_x509_certificate(der)
    assert format(certificate.serial_number, "x") == serial
    assert certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    (tmp_path / "leaf.der").write_bytes(der)
    subprocess.run(["openssl", "x509", "-inform", "DER", "-in", tmp_path / "leaf.der", "-out", tmp_path / "leaf.pem"], check=True)
    for name in ("root", "people"):
        (tmp_path / f"{name}.der").write_bytes(requests.get(f"{hall.base}/pki/ca/{name}.crt", timeout=10).content)
        subprocess.run(["openssl", "x509", "-inform", "DER", "-in", tmp_path / f"{name}.der", "-out", tmp_path / f"{name}.pem"], check=True)
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            tmp_path / "root.pem",
            "-untrusted",
            tmp_path / "people.pem",
            tmp_path / "leaf.pem",
        ],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0 and ": OK" in verify.stdout, verify.stdout + verify.stderr
    # The certificate's key is the token's key.
    usb.pkcs11_tool("--read-object", "--type", "pubkey", "--id", key_id, "--output-file", str(tmp_path / "pub.der"))
    token_public = serialization.load_der_public_key((tmp_path / "pub.der").read_bytes())
    assert token_public.public_numbers() == certificate.public_key().public_numbers()

    actions = [a for a, _ in hall.audit_actions()]
    assert "idp.enrolment.issued" in actions and "ca.certificate.issued" in actions
    issued = [d for a, d in hall.audit_actions() if a == "idp.enrolment.issued"][-1]
    assert (
        issued["serial"] == serial
        and issued["subject_id"] == resident_id[:3] + "*" * 11 + resident_id[-4:]
        and issued["client_id"] == "hallmark-key"
    )


def test_enroll_with_browser_login_on_a_loopback_port(hall, tmp_path):
    """Without --access-token: hallmark-key prints the login URL, listens on a loopback port, gets the code."""
    resident_id = new_resident_id()
    username = hall.account(resident_id=resident_id, legal_name="李四")
    usb = make_usb_key(tmp_path / "usb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keyagent.cli",
            "enroll",
            "--profile",
            "person-auth",
            "--name",
            "李 四",
            "--resident-id",
            resident_id,
            "--idp",
            hall.base,
            "--no-browser",
            "--pin-file",
            str(usb.pin_file),
        ],
        env=usb.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        for _ in range(20):
            line = process.stdout.readline()
            if line.startswith(hall.base + "/oauth/authorize?"):
                url = line.strip()
                break
        assert url, process.stderr.read() if process.poll() is not None else "no login URL printed"
        assert "prompt=login" in url and "code_challenge_method=S256" in url and "client_id=hallmark-key" in url
        callback = re.search(r"redirect_uri=([^&]+)", url).group(1)
        redirect = requests.utils.unquote(callback)
        location = log_in_through_browser(hall.base, url, username, redirect)
        page = requests.get(location, timeout=10)  # the browser lands on hallmark-key's loopback listener
        assert page.status_code == 200 and "hallmark-key" in page.text
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "enrolled person-auth certificate" in out and "IDCCN-" + resident_id[:3] + "*" * 11 in out and "CN=李四" in out
    assert resident_id not in out  # the terminal shows it masked


def test_loopback_redirect_matches_any_port_but_not_another_path(hall):
    ok = requests.get(
        hall.base + "/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": "hallmark-key",
            "redirect_uri": "http://127.0.0.1:61000/callback",
            "scope": "openid",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
            "state": "s",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert ok.status_code == 302 and ok.headers["Location"].startswith("/login")
    for wrong in ("http://127.0.0.1:61000/elsewhere", "http://localhost:61000/callback", "http://192.0.2.1:61000/callback"):
        refused = requests.get(
            hall.base + "/oauth/authorize",
            params={
                "response_type": "code",
                "client_id": "hallmark-key",
                "redirect_uri": wrong,
                "scope": "openid",
                "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                "code_challenge_method": "S256",
            },
            allow_redirects=False,
            timeout=10,
        )
        assert refused.status_code == 400, wrong


def _keys_on(usb) -> list:
    return json.loads(usb.run("list", "--login", "--json", "--pin-file", str(usb.pin_file)).stdout)["tokens"][0]["keys"]


@pytest.mark.parametrize("case", ["id-mismatch", "name-mismatch", "basic-level"])
def test_refused_enrolment_leaves_nothing_behind(hall, tmp_path, case):
    if case == "basic-level":
        username = hall.account()  # registered, not proofed
        token = access_token(hall.base, username, client_id="basic-tool", port=8009, redirect_path="/basic-cb")
        args = ("--name", "张三", "--resident-id", ZHANG_SAN_ID)
    else:
        resident_id = new_resident_id()
        username = hall.account(resident_id=resident_id, legal_name="王五")
        token = access_token(hall.base, username)
        args = (
            ("--name", "王五", "--resident-id", ZHANG_SAN_ID) if case == "id-mismatch" else ("--name", "王六", "--resident-id", resident_id)
        )
    before = certificate_count(hall)
    usb = make_usb_key(tmp_path / "usb")
    result = usb.run(
        "enroll",
        "--profile",
        "person-auth",
        *args,
        "--idp",
        hall.base,
        "--access-token",
        token["access_token"],
        "--pin-file",
        str(usb.pin_file),
    )
    assert result.returncode == 1
    expected = {"id-mismatch": "resident ID is not the one", "name-mismatch": "not the legal name", "basic-level": "real-name login"}[case]
    assert expected in result.stderr and "nothing was stored" in result.stderr
    assert _keys_on(usb) == []  # the key pair made for the attempt is gone again
    assert certificate_count(hall) == before
    refused = [d for a, d in hall.audit_actions() if a == "idp.enrolment.refused"]
    assert (
        refused[-1]["reason"]
        == {"id-mismatch": "identity_mismatch", "name-mismatch": "name_mismatch", "basic-level": "insufficient_level"}[case]
    )


def test_api_refusals_are_problems_and_store_nothing(hall):
    resident_id = new_resident_id()
    username = hall.account(resident_id=resident_id, legal_name="赵六")
    token = access_token(hall.base, username)["access_token"]
    good = {"profile": "person-auth", "csr": software_csr(), "name": "赵六", "resident_id": resident_id}
    before = certificate_count(hall)
    cases = [
        ({**good, "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}, 400, "PKCS#10"),
        ({**good, "profile": "person-sign"}, 422, "person-auth or enterprise-auth"),
        ({**good, "profile": "server-tls"}, 422, "person-auth or enterprise-auth"),
        ({**good, "resident_id": resident_id[:-1] + ("0" if resident_id[-1] != "0" else "1")}, 422, "resident ID is not valid"),
        ({k: v for k, v in good.items() if k != "resident_id"}, 400, "needs 'resident_id'"),
        ({**good, "credit_code": "91350100M000100Y43"}, 400, "not 'credit_code'"),
        ({**good, "csr": software_csr(curve=ec.SECP521R1())}, 422, "does not accept"),
        ({**good, "extra": 1}, 400, "unknown field"),
    ]
    for body, status, words in cases:
        response = post_enrolment(hall, token, body)
        assert response.status_code == status, (body.get("profile"), response.text)
        assert response.headers["Content-Type"].startswith("application/problem+json") and words in response.json()["detail"], response.text
    not_json = requests.post(hall.base + "/api/idp/enrolments", data="csr", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert not_json.status_code == 400
    assert certificate_count(hall) == before

    # Without the scope: a proofed person's token that was not issued for enrolment, so not for this API either
    # (an openid token's audience is userinfo; the scope check behind the audience is in test_app).
    no_scope = access_token(hall.base, username, client_id="basic-tool", scope="openid", port=8009, redirect_path="/basic-cb")[
        "access_token"
    ]
    refused = post_enrolment(hall, no_scope, good)
    assert refused.status_code == 401 and "/api/idp" in refused.json()["detail"]
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    # A client's own token (client credentials) speaks for no person.
    machine = requests.post(
        hall.base + "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "cert:enrol"},
        auth=("approval", hall.approval_secret),
        timeout=10,
    ).json()["access_token"]
    refused = post_enrolment(hall, machine, good)
    assert refused.status_code == 403 and refused.json()["code"] == "not_a_person"
    assert post_enrolment(hall, "not-a-token", good).status_code == 401
    assert requests.post(hall.base + "/api/idp/enrolments", json=good, timeout=10).status_code == 401

    # A revoked token enrols nothing, though its signature and expiry are still fine.
    spare = access_token(hall.base, username)["access_token"]
    revoked = requests.post(hall.base + "/oauth/revoke", data={"token": spare, "client_id": "hallmark-key"}, timeout=10)
    assert revoked.status_code == 200
    refused = post_enrolment(hall, spare, good)
    assert refused.status_code == 401 and refused.json()["code"] == "token_inactive"  # refused by the bearer check, audited
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    assert certificate_count(hall) == before

    # And the request that is right is issued, with its chain.
    issued = post_enrolment(hall, token, good)
    assert issued.status_code == 201, issued.text
    body = issued.json()
    certificate = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert format(certificate.serial_number, "x") == body["serial"]
    chain = [x509.load_pem_x509_certificate(c.encode()) for c in body["chain"]]
    certificate.verify_directly_issued_by(chain[0])
    chain[0].verify_directly_issued_by(chain[1])
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "赵六"
    assert certificate_count(hall) == before + 1


def test_enterprise_certificate_for_the_legal_representative_only(hall, tmp_path):
    enterprises = pytest.importorskip("idp.enterprises", reason="enterprise accounts (idp/people/enterprises.py) are built in parallel")
    from core import db as core_db
    from core.identifiers import generate_credit_code, organisation_code_check_char
    from idp.people import accounts

    body8 = f"{secrets.randbelow(10**8):08d}"
    code = generate_credit_code("91350102" + body8 + organisation_code_check_char(body8))
    representative = hall.account(resident_id=new_resident_id(), legal_name="钱七")
    bystander = hall.account(resident_id=new_resident_id(), legal_name="孙八")
    with core_db.transaction(hall.sessions) as db:
        enterprises.add(
            db, credit_code=code, name="福州示例科技有限公司", representative=accounts.find(db, representative).id, actor="test"
        )

    body = {"profile": "enterprise-auth", "csr": software_csr("福州示例科技有限公司"), "name": "福州示例科技有限公司", "credit_code": code}
    refused = post_enrolment(hall, access_token(hall.base, bystander)["access_token"], body)
    assert refused.status_code == 403 and refused.json()["code"] == "not_representative"
    token = access_token(hall.base, representative)["access_token"]
    wrong_name = post_enrolment(hall, token, {**body, "name": "别的公司"})
    assert wrong_name.status_code == 403 and wrong_name.json()["code"] == "name_mismatch"

    usb = make_usb_key(tmp_path / "usb")
    result = usb.run(
        "enroll",
        "--profile",
        "enterprise-auth",
        "--name",
        "福州示例科技有限公司",
        "--credit-code",
        code,
        "--idp",
        hall.base,
        "--access-token",
        token,
        "--pin-file",
        str(usb.pin_file),
    )
    assert result.returncode == 0, result.stderr
    listed = json.loads(usb.run("list", "--json").stdout)["tokens"][0]
    leaf = next(c for c in listed["certificates"] if not c["ca"])
    assert f"NTRCN-{code[:3]}" + "*" * 11 + code[-4:] in leaf["subject"] and "O=福州示例科技有限公司" in leaf["subject"] and leaf["has_key"]
