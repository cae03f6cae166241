"""USB-key signing: a SoftHSM2 token plays the enterprise's USB key, driven by hallmark-key (keyagent/pdf.py)."""

from __future__ import annotations

import base64
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from asn1crypto import cms

from hsm import softhsm
from tests import browser as chromium
from tests.browser import SHOTS
from tests.conftest import ROOT
from tests.keyagent_fixtures import agent_outcome, ask_agent, confirm_in_browser
from tests.signing_fixtures import (
    ENTERPRISE,
    ENTERPRISE_CODE_PREFIX,
    make_pdf,
    pdfsig,
    pyhanko_ades,
    qpdf_clean,
    signing_world,  # noqa: F401 - fixture
    valid_credit_code,
)

pytestmark = pytest.mark.slow
USB_PIN = "246810"


@dataclass
class UsbKey:
    conf: Path
    label: str
    pin_file: Path
    code: str
    certificate_der: bytes
    chain_der: list[bytes]


def _on_token(conf: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    """Run Python against the USB key's own SoftHSM2 configuration (a process has one)."""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("HALLMARK_")}
    env["SOFTHSM2_CONF"] = str(conf)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def usb_key(signing_world, tmp_path_factory) -> UsbKey:
    """An enterprise signing certificate from our people CA, its key generated inside the 'USB key'."""
    world = signing_world
    directory = tmp_path_factory.mktemp("usb-key")
    conf = softhsm.write_config(directory / "softhsm")
    softhsm.init_token(conf, "usb-key", USB_PIN, "13579111")
    made = _on_token(
        conf,
        """
        import sys
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import NameOID
        from hsm import KeyAlgorithm, PKCS11KeyManager
        from hsm.softhsm import default_module
        keys = PKCS11KeyManager(default_module(), "usb-key", sys.argv[1])
        info = keys.create_key("enterprise-sign", KeyAlgorithm.EC_P256)
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "usb")])).sign(keys.signer(info.uri), hashes.SHA256())
        print(info.uri)
        print(csr.public_bytes(serialization.Encoding.PEM).decode())
    """,
        USB_PIN,
    )
    uri, csr = made.stdout.split("\n", 1)
    key_id = uri.split("id=", 1)[1].replace("%", "")
    (directory / "req.pem").write_text(csr)
    code = valid_credit_code(ENTERPRISE_CODE_PREFIX)
    issued = world.hallmark(
        "ca",
        "issue",
        "--profile",
        "enterprise-sign",
        "--csr",
        str(directory / "req.pem"),
        "--subject-id",
        code,
        "--name",
        ENTERPRISE,
        "--out",
        str(directory / "cert.pem"),
    )
    assert issued.returncode == 0, issued.stderr
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    certificate = x509.load_pem_x509_certificate((directory / "cert.pem").read_bytes())
    people = requests.get(f"{world.base}/pki/ca/people.crt", timeout=10).content
    people_der = people if people[:1] == b"\x30" else x509.load_pem_x509_certificate(people).public_bytes(Encoding.DER)
    (directory / "cert.der").write_bytes(certificate.public_bytes(Encoding.DER))
    (directory / "people.der").write_bytes(people_der)
    for path, object_id, label in ((directory / "cert.der", key_id, "enterprise-sign"), (directory / "people.der", "ca01", "people-ca")):
        written = subprocess.run(
            [
                "pkcs11-tool",
                "--module",
                softhsm.default_module(),
                "--token-label",
                "usb-key",
                "--login",
                "--pin",
                USB_PIN,
                "--write-object",
                str(path),
                "--type",
                "cert",
                "--id",
                object_id,
                "--label",
                label,
            ],
            env={"SOFTHSM2_CONF": str(conf), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert written.returncode == 0, written.stderr
    pin_file = directory / "pin"
    pin_file.write_text(USB_PIN)
    return UsbKey(conf, "usb-key", pin_file, code, certificate.public_bytes(Encoding.DER), [people_der])


def _hallmark_key(usb: UsbKey, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("HALLMARK_")}
    config = usb.conf.parent / "agent.toml"
    config.touch()  # an empty settings file: nothing from the user's own configuration leaks in
    env["HALLMARK_KEY_CONFIG"] = str(config)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "keyagent.cli",
            *args,
            "--softhsm2-conf",
            str(usb.conf),
            "--token",
            usb.label,
            "--pin-file",
            str(usb.pin_file),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _token_sign(usb: UsbKey, data: bytes) -> bytes:
    """The USB key signs ``data`` the way the local agent does for purpose 'document' (SHA-256, hash-and-sign)."""
    result = _on_token(
        usb.conf,
        """
        import base64, sys
        from keyagent import pdf
        session = pdf.open_token(__import__("hsm.softhsm", fromlist=["x"]).default_module(), "usb-key", sys.argv[1])
        identity = pdf.find_identity(session)
        print(base64.b64encode(pdf.sign_bytes(pdf.pkcs11_signer(session, identity), base64.b64decode(sys.argv[2]))).decode())
    """,
        USB_PIN,
        base64.b64encode(data).decode(),
    )
    return base64.b64decode(result.stdout.strip())


def test_sign_remote_with_the_usb_key_is_valid_for_pdfsig_and_us(signing_world, usb_key, tmp_path):
    world = signing_world
    source, target = tmp_path / "application.pdf", tmp_path / "signed.pdf"
    source.write_bytes(make_pdf("Enterprise application"))
    result = _hallmark_key(
        usb_key,
        "sign-remote",
        str(source),
        str(target),
        "--server",
        world.base,
        "--access-token",
        world.token("sign:remote"),
        "--expect",
        usb_key.code,
    )
    assert result.returncode == 0, result.stderr
    assert "signer: " + ENTERPRISE in result.stdout and usb_key.code not in result.stdout  # masked on screen
    judged = pdfsig(target, world.nssdir)
    assert judged[0].signature_valid and judged[0].certificate_trusted, judged[0].lines
    assert judged[0].value("Signer Certificate Common Name") == ENTERPRISE
    assert qpdf_clean(target)[0]
    report = requests.post(
        world.base + "/api/validate",
        data=target.read_bytes(),
        timeout=60,
        headers={"Authorization": f"Bearer {world.token('sign:validate')}", "Content-Type": "application/pdf"},
    ).json()
    entry = report["signatures"][0]
    assert entry["indication"] == "TOTAL_PASSED" and entry["pades_level"] == "PAdES-BASELINE-LT", entry
    assert entry["signer"]["identifier"]["value"] == usb_key.code and entry["hallmark_document"]["id"]
    crls = [requests.get(f"{world.base}/pki/crl/{n}.crl", timeout=10).content for n in ("root", "people", "services")]
    assert pyhanko_ades(target.read_bytes(), world.root_der, usb_key.chain_der, crls) == [("PASSED", None)]


def test_sign_pdf_locally_on_the_usb_key(signing_world, usb_key, tmp_path):
    world = signing_world
    source, target = tmp_path / "in.pdf", tmp_path / "local.pdf"
    source.write_bytes(make_pdf())
    result = _hallmark_key(usb_key, "sign-pdf", str(source), str(target), "--level", "B-T", "--tsa", world.base + "/pki/tsa")
    assert result.returncode == 0, result.stderr
    judged = pdfsig(target, world.nssdir)
    assert judged[0].signature_valid and judged[0].certificate_trusted, judged[0].lines
    assert qpdf_clean(target)[0]
    crls = [requests.get(f"{world.base}/pki/crl/{n}.crl", timeout=10).content for n in ("root", "people", "services")]
    assert pyhanko_ades(target.read_bytes(), world.root_der, usb_key.chain_der, crls) == [("PASSED", None)]


def _prepare(world, usb: UsbKey, **extra) -> requests.Response:
    body = {
        "pdf": base64.b64encode(make_pdf()).decode(),
        "certificate": base64.b64encode(usb.certificate_der).decode(),
        "chain": [base64.b64encode(d).decode() for d in usb.chain_der],
        "level": "B-T",
        **extra,
    }
    return requests.post(
        world.base + "/api/sign/remote", json=body, headers={"Authorization": f"Bearer {world.token('sign:remote')}"}, timeout=60
    )


def _finish(world, session_id: str, signature: bytes) -> requests.Response:
    return requests.post(
        f"{world.base}/api/sign/remote/{session_id}/finish",
        json={"signature": base64.b64encode(signature).decode()},
        headers={"Authorization": f"Bearer {world.token('sign:remote')}"},
        timeout=60,
    )


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_remote_session_refuses_a_wrong_signature_then_finishes_once(signing_world, usb_key):
    world = signing_world
    prepared = _prepare(world, usb_key)
    assert prepared.status_code == 201, prepared.text
    body = prepared.json()
    assert body["signature_algorithm"] == "ecdsa-with-SHA256" and body["signer"]["identifier"] == usb_key.code
    to_sign = _unb64url(body["to_sign"])
    wrong = _finish(world, body["session"], _token_sign(usb_key, to_sign + b"another document"))
    assert wrong.status_code == 422 and wrong.json()["code"] == "signature_mismatch"
    done = _finish(world, body["session"], _token_sign(usb_key, to_sign))
    assert done.status_code == 200, done.text
    finished = done.json()
    assert finished["signer"]["identifier"] == usb_key.code and finished["signer"]["identifier_kind"] == "credit_code"
    assert finished["level"] == "B-T" and base64.b64decode(finished["pdf"]).startswith(b"%PDF-")
    again = _finish(world, body["session"], _token_sign(usb_key, to_sign))
    assert again.status_code == 409 and again.json()["code"] == "session_finished"
    with sqlite3.connect(world.instance / "hallmark.db") as connection:
        leftover = connection.execute(
            "select length(prepared_pdf), status from signing_remote_sessions where id = ?", (body["session"],)
        ).fetchone()
        actions = [
            r[0]
            for r in connection.execute(
                "select action from audit_events where target in (?, ?) order by seq", (body["session"], finished["document_id"])
            )
        ]
    assert leftover == (0, "finished")
    assert actions == ["signing.remote.prepared", "signing.remote.finished"]


def test_expired_session_and_wrong_applicant_are_refused(signing_world, usb_key):
    world = signing_world
    prepared = _prepare(world, usb_key).json()
    with sqlite3.connect(world.instance / "hallmark.db") as connection:
        connection.execute(
            "update signing_remote_sessions set expires_at = '2000-01-01 00:00:00.000000' where id = ?", (prepared["session"],)
        )
    expired = _finish(world, prepared["session"], _token_sign(usb_key, _unb64url(prepared["to_sign"])))
    assert expired.status_code == 410 and expired.json()["code"] == "session_expired"
    other = _prepare(world, usb_key, expected_identifier=valid_credit_code("91350100MA000001"))
    assert other.status_code == 422 and other.json()["code"] == "identity_mismatch"
    unknown = _finish(world, "AAAAAAAAAAAAAAAAAAAAAA", b"x")
    assert unknown.status_code == 404
    not_a_certificate = _prepare(world, usb_key, certificate=base64.b64encode(b"nope").decode())
    assert not_a_certificate.status_code == 400 and not_a_certificate.json()["code"] == "bad_certificate"
    not_pdf = requests.post(
        world.base + "/api/sign/remote",
        json={"pdf": "aGVsbG8=", "certificate": base64.b64encode(usb_key.certificate_der).decode()},
        headers={"Authorization": f"Bearer {world.token('sign:remote')}"},
        timeout=30,
    )
    assert not_pdf.status_code == 422 and not_pdf.json()["code"] == "not_a_pdf"


def test_a_hall_page_drives_remote_signing_through_the_local_agent(signing_world, usb_key, tmp_path):
    """As a hall page would: the server prepares, the running hallmark-key agent signs for an allowed origin once the
    holder has confirmed on the agent's page (in chromium), the server finishes."""
    from hallmark.demo_usbkey import write_agent_config
    from tests.conftest import free_port

    world, hall = signing_world, "https://hall.example"
    config = tmp_path / "agent.toml"
    write_agent_config(
        config,
        {
            "module": softhsm.default_module(),
            "token": usb_key.label,
            "softhsm2_conf": str(usb_key.conf),
            "pin": USB_PIN,
            "allowed_origins": [hall],
        },
    )
    port = free_port()
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("HALLMARK_", "SOFTHSM2_"))}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "no-user-config")
    agent = subprocess.Popen(
        [sys.executable, "-m", "keyagent.cli", "serve", "--config", str(config), "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert agent.stdout.readline().startswith("ready ")
        base = f"http://127.0.0.1:{port}"
        status = requests.get(base + "/v1/status", headers={"Origin": hall}, timeout=15).json()
        assert any(ENTERPRISE in c["subject"] for c in status["certificates"]), status
        prepared = _prepare(world, usb_key)
        assert prepared.status_code == 201, prepared.text
        body = prepared.json()
        ask = {"purpose": "document", "data": body["to_sign"], "document": {"name": "企业申报材料 application.pdf", "pages": 1}}
        refused = requests.post(base + "/v1/sign", json=ask, headers={"Origin": "https://elsewhere.example"}, timeout=15)
        assert refused.status_code == 403 and "signature" not in refused.text
        asked = ask_agent(base, ask, hall)
        assert asked.status_code == 202 and "signature" not in asked.text, asked.text
        pending = asked.json()
        # The holder sees, on the agent's own page, who asks to sign what, and confirms there.
        signed_attributes = cms.CMSAttributes.load(_unb64url(body["to_sign"]))
        digest = next(a["values"][0].native for a in signed_attributes if a["type"].native == "message_digest").hex()
        with chromium.page(tmp_path / "profile", viewport={"width": 900, "height": 900}) as page:
            shown = confirm_in_browser(page, pending["confirm_url"], shot=SHOTS / "usb-key-sign-confirm.png")
            after = page.locator("main").inner_text()
        assert hall in shown and "签署文件" in shown and "Sign a document" in shown
        assert "企业申报材料 application.pdf" in shown and "页数" in shown and "\n1\n" in shown
        assert " ".join(digest[i : i + 8] for i in range(0, 64, 8)) in shown  # the digest the signature covers
        assert ENTERPRISE in shown
        assert "已签名" in after
        signed = agent_outcome(base, pending["request"], hall, wait=20)
        assert signed.status_code == 200, signed.text
        answer = signed.json()
        assert base64.b64decode(answer["certificate"]) == usb_key.certificate_der
        done = _finish(world, body["session"], _unb64url(answer["signature"]))
        assert done.status_code == 200, done.text
        target = tmp_path / "signed-through-agent.pdf"
        target.write_bytes(base64.b64decode(done.json()["pdf"]))
        judged = pdfsig(target, world.nssdir)
        assert judged[0].signature_valid and judged[0].certificate_trusted, judged[0].lines
        assert qpdf_clean(target)[0]
    finally:
        agent.terminate()
        agent.wait(10)
        agent.stdout.close()


def test_only_the_client_that_prepared_a_session_can_finish_it(signing_world, usb_key):
    world = signing_world
    prepared = _prepare(world, usb_key).json()
    signature = _token_sign(usb_key, _unb64url(prepared["to_sign"]))
    stranger = requests.post(
        f"{world.base}/api/sign/remote/{prepared['session']}/finish",
        json={"signature": base64.b64encode(signature).decode()},
        headers={"Authorization": f"Bearer {world.token('sign:remote', other=True)}"},
        timeout=60,
    )
    assert stranger.status_code == 404 and stranger.json()["code"] == "no_such_session"
    assert _finish(world, prepared["session"], signature).status_code == 200


def test_a_login_certificate_cannot_sign_documents(signing_world, usb_key, tmp_path):
    """A digitalSignature-only (person-auth) certificate is for logging in, never for putting a name under a document."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    world = signing_world
    key = ec.generate_private_key(ec.SECP256R1())  # a software key is enough: prepare only reads the certificate
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "req.pem").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    from tests.certlogin_fixtures import new_resident_id

    issued = world.hallmark(
        "ca",
        "issue",
        "--profile",
        "person-auth",
        "--csr",
        str(tmp_path / "req.pem"),
        "--subject-id",
        new_resident_id(),
        "--name",
        "张三",
        "--out",
        str(tmp_path / "auth.pem"),
    )
    assert issued.returncode == 0, issued.stderr
    login_cert = x509.load_pem_x509_certificate((tmp_path / "auth.pem").read_bytes()).public_bytes(serialization.Encoding.DER)
    body = {
        "pdf": base64.b64encode(make_pdf()).decode(),
        "certificate": base64.b64encode(login_cert).decode(),
        "chain": [base64.b64encode(d).decode() for d in usb_key.chain_der],
        "level": "B-T",
    }
    refused = requests.post(
        world.base + "/api/sign/remote", json=body, headers={"Authorization": f"Bearer {world.token('sign:remote')}"}, timeout=60
    )
    assert refused.status_code == 422 and refused.json()["code"] == "certificate_usage"


@pytest.mark.parametrize(
    "options, body",
    [
        ({"options": {"x": [1]}}, None),
        ({"options": {"page": {}}}, None),
        ({"level": 5}, None),
        ({"reason": ["x"]}, None),
        ({"options": {"page": "nan"}}, None),
        ({"options": {"x": "inf"}}, None),
    ],
)
def test_odd_values_in_a_remote_request_are_refused_cleanly(signing_world, usb_key, options, body):
    prepared = _prepare(signing_world, usb_key, **options)
    assert 400 <= prepared.status_code < 500 and prepared.headers["Content-Type"].startswith("application/problem+json"), prepared.text
