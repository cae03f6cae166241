"""examples/approval against a real Hallmark: steps 1-8 of issue 17 over HTTP, across the real processes.

``hallmark demo prepare`` registers what the example needs (as ``make run`` does); then
``hallmark serve``, the approval system, its second instance and the payment service run as
processes of their own, on free ports, and the test is the applicant's browser, the counter's
kiosk and an officer's browser, all plain HTTP. The USB keys are keys in the test SoftHSM2
token (tests/certlogin_fixtures.py), with certificates issued by the server's CA through
``hallmark ca issue``: the enterprise's (login and signing) and the officer's. The test signs
what the hallmark-key agent would sign after the holder confirmed (the login challenge, the
form's signed attributes); the agent itself is tested in tests/keyagent.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import subprocess
import sys
import time
from urllib.parse import urljoin

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from core.identifiers import generate_credit_code, organisation_code_check_char
from idp.people import realname
from licenses import demo as licence_demo
from tests.certlogin_fixtures import DATA_CSRF, UsbKey, signed_fields, usb_key  # noqa: F401
from tests.conftest import ROOT, free_port, initialised_copy, run_hallmark, run_hallmark_process, start_server, stop_server

pytestmark = pytest.mark.slow
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
JSON = {"Accept": "application/json"}
ENTERPRISE = "示范市闽江食品有限公司"


def demo_credit_code() -> str:
    organisation = "MA2Y0001"  # hallmark.demo's enterprise
    return generate_credit_code("91350100" + organisation + organisation_code_check_char(organisation))


class World:
    def __init__(self, instance, idp, demo, usb):
        self.instance, self.idp, self.demo, self.usb = instance, idp, demo, usb
        approval = demo["approval"]
        self.first, self.second = (s["base"] for s in approval["instances"].values())
        self.payment = approval["payment"]["base"]

    def password(self, username: str) -> str:
        return self.demo["accounts"][username]["password"]

    def certificate(self, profile: str, subject_id: str, name: str, tmp_path) -> tuple[object, x509.Certificate]:
        """A key in the test token and a certificate for it from the server's CA (as a counter issues one)."""
        signer = self.usb.new_key()
        csr, out = tmp_path / f"{profile}-{subject_id}.csr", tmp_path / f"{profile}-{subject_id}.pem"
        csr.write_bytes(UsbKey.csr(signer))
        done = run_hallmark(
            self.instance, "ca", "issue", "--profile", profile, "--csr", csr, "--subject-id", subject_id, "--name", name, "--out", out
        )
        assert done.returncode == 0, done.stderr
        return signer, x509.load_pem_x509_certificate(out.read_bytes())

    def sign_in(self, browser: requests.Session, start: str, until: str, username: str, keys: dict) -> requests.Response:
        """Follow a relying party's login through Hallmark's pages as the person would, until back at ``until``."""
        response = browser.get(start, timeout=30)
        for _ in range(12):
            if response.url.startswith(until):
                return response
            assert response.status_code == 200, (response.url, response.text[:500])
            text = response.text
            if 'name="decision" value="allow"' in text:  # the consent page (the authorization details)
                fields = {k: html.unescape(v) for k, v in re.findall(r'name="(next|form_token)" value="([^"]*)"', text)}
                response = browser.post(self.idp + "/consent", data={**fields, "decision": "allow"}, timeout=30)
            elif 'name="password"' in text and "/login/step-up" not in response.url:
                next_url = re.search(r'name="next" value="([^"]*)"', text).group(1).replace("&amp;", "&")
                data = {
                    "csrf_token": CSRF.search(text).group(1),
                    "next": next_url,
                    "identifier": username,
                    "password": self.password(username),
                }
                response = browser.post(self.idp + "/login", data=data, timeout=30)
            elif "data-cert-login" in text:  # what the page's script does with the agent's signature
                purpose = re.search(r'data-purpose="([^"]*)"', text).group(1)
                signer, certificate = keys[purpose]
                csrf, next_url = DATA_CSRF.search(text).group(1), re.search(r'data-next="([^"]*)"', text).group(1).replace("&amp;", "&")
                challenge = browser.post(
                    self.idp + "/login/cert/challenge", data={"csrf_token": csrf, "purpose": purpose}, headers=JSON, timeout=30
                )
                assert challenge.status_code == 200, challenge.text
                fields = signed_fields(challenge.json()["challenge"], signer, certificate)
                done = browser.post(
                    self.idp + "/login/cert", data={"csrf_token": csrf, "next": next_url, **fields}, headers=JSON, timeout=30
                )
                assert done.status_code == 200, done.text
                response = browser.get(urljoin(self.idp, done.json()["redirect"]), timeout=30)
            else:
                raise AssertionError(f"unexpected page {response.url}: {text[:800]}")
        raise AssertionError("too many pages")


def start(command: list[str], env: dict, port: int, log) -> subprocess.Popen:
    process = subprocess.Popen(command, env={**os.environ, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, f"{command[-1]} exited"
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)
            return process
        except requests.ConnectionError:
            assert time.monotonic() < deadline, f"{command[-1]} did not start"
            time.sleep(0.2)


def start_payment_and_approval_systems(children: list, approval: dict, idp: str, payment: int, log, **extra_env: str) -> None:
    """The demo payment service and every approval-system instance of ``hallmark demo``, each appended to ``children``
    once it answers (so that a caller stops those started even when a later one fails)."""
    children.append(
        start(
            [sys.executable, "examples/approval/payment.py"],
            {
                "PAYMENT_CLIENT_ID": "payment-service",
                "PAYMENT_CLIENT_SECRET": approval["payment"]["client_secret"],
                "PAYMENT_PORT": str(payment),
                "PAYMENT_IDP": idp,
                "PAYMENT_DEPARTMENT": approval["issuer"],
            },
            payment,
            log,
        )
    )
    for client_id, system in approval["instances"].items():
        env = {
            "APPROVAL_CLIENT_ID": client_id,
            "APPROVAL_CLIENT_SECRET": system["client_secret"],
            "APPROVAL_PORT": str(system["port"]),
            "APPROVAL_IDP": idp,
            "APPROVAL_MATTER": approval["matter"],
            "APPROVAL_ISSUER": approval["issuer"],
            "APPROVAL_OFFICERS": ",".join(approval["officers"]),
            "APPROVAL_PAYMENT": approval["payment"]["base"],
            **extra_env,
        }
        children.append(start([sys.executable, "examples/approval/approval.py"], env, system["port"], log))


@pytest.fixture(scope="module")
def world(tmp_path_factory, usb_key):
    instance = tmp_path_factory.mktemp("approval") / "instance"
    initialised_copy(instance)
    idp_port, first, second, payment = free_port(), free_port(), free_port(), free_port()
    idp = f"http://127.0.0.1:{idp_port}"
    prepared = run_hallmark_process(
        instance,
        "demo",
        "prepare",
        "--json",
        timeout=300,
        HALLMARK_PUBLIC_URL=idp,
        HALLMARK_DEMO_HALL_PORTS=f"{free_port()},{free_port()}",
        HALLMARK_DEMO_APPROVAL_PORTS=f"{first},{second},{payment}",
    )
    assert prepared.returncode == 0, prepared.stderr
    demo = json.loads(prepared.stdout)
    approval = demo["approval"]
    server, _ = start_server(
        instance, port=idp_port, log=instance / "server.log", HALLMARK_EVENT_ENDPOINT_HOSTS=f"127.0.0.1:{first} 127.0.0.1:{second}"
    )
    log = (instance / "examples.log").open("w")
    children = []
    try:
        start_payment_and_approval_systems(children, approval, idp, payment, log)
        yield World(instance, idp, demo, usb_key)
    finally:
        for child in children:
            child.terminate()
            child.wait(10)
        stop_server(server)
        log.close()


@pytest.mark.timeout(600)
def test_a_food_business_licence_from_login_to_a_licence_a_second_system_trusts(world, tmp_path):
    code = demo_credit_code()
    company_login = world.certificate("enterprise-auth", code, ENTERPRISE, tmp_path)
    company_sign = world.certificate("enterprise-sign", code, ENTERPRISE, tmp_path)
    officer = realname.demo_people(1)[0]  # demo-realname, the demo's officer
    officer_key = world.certificate("person-auth", officer.resident_id, officer.name, tmp_path)

    # 1. The catalogue says level 3; the applicant's password alone is not enough, the enterprise's USB key is.
    home = requests.get(world.first + "/", timeout=30).text
    assert 'id="matter-level">L3<' in home and "食品经营许可" in home
    applicant = requests.Session()
    back = world.sign_in(applicant, world.first + "/login", world.first, "demo-legalrep", {"enterprise": company_login})
    assert 'data-acr="urn:hallmark:loa:3"' in back.text and ENTERPRISE in back.text, back.text[-1500:]

    # 2. The business licence is compared, never read: a wrong legal representative is refused, the right one accepted.
    licence_face = licence_demo.sample_face(licence_demo.BUSINESS_LICENCE, holder_code=code, holder_name=ENTERPRISE)
    wrong = applicant.post(
        world.first + "/apply",
        data={"name": ENTERPRISE, "legal_representative": "某某某", "premises": "示范市鼓楼区五四路1号（一层） (A\\B)"},
        timeout=30,
    )
    assert "营业执照信息不符" in wrong.text and "no_match" in wrong.text and "/case/" not in wrong.url
    claims = {
        "name": ENTERPRISE,
        "legal_representative": licence_face["legal_representative"],
        "premises": "示范市鼓楼区五四路1号（一层） (A\\B)",
    }
    applied = applicant.post(world.first + "/apply", data=claims, timeout=30)
    assert "/case/" in applied.url and 'data-state="compared"' in applied.text, applied.text[-1500:]
    case = applied.url.rsplit("/", 1)[1]

    # 3. The form is signed with the enterprise's key (remote signing) and accepted after /api/validate.
    signer, certificate = company_sign
    fingerprint = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    nothing = applicant.post(f"{world.first}/case/{case}/sign/prepare", json={"fingerprints": ["00" * 32]}, timeout=30)
    assert nothing.status_code == 409
    prepared = applicant.post(f"{world.first}/case/{case}/sign/prepare", json={"fingerprints": [fingerprint]}, timeout=60)
    assert prepared.status_code == 200, prepared.text
    to_sign = base64.urlsafe_b64decode(prepared.json()["to_sign"] + "==")
    signature = base64.urlsafe_b64encode(signer.sign(to_sign, ec.ECDSA(hashes.SHA256()))).rstrip(b"=").decode()
    finished = applicant.post(f"{world.first}/case/{case}/sign/finish", json={"signature": signature}, timeout=120)
    assert finished.status_code == 200 and finished.json() == {"state": "signed"}, finished.text
    signed_form = applicant.get(f"{world.first}/case/{case}/form.pdf", timeout=30).content
    assert signed_form.startswith(b"%PDF") and b"/ByteRange" in signed_form
    # A form signed by someone else is not accepted: the department's sealed sample is a valid signature, not the applicant's.
    other = applicant.post(f"{world.first}/case/{case}/form", data=(world.instance / "demo-sealed.pdf").read_bytes(), timeout=60)
    assert other.status_code == 422
    # Bad input gets a 4xx, never a 500: a file that is no PDF, a signature that is no base64url.
    assert applicant.post(f"{world.first}/case/{case}/form", data=b"not a pdf", timeout=60).status_code == 422
    assert applicant.post(f"{world.first}/case/{case}/sign/finish", json={"signature": "%%%"}, timeout=60).status_code == 400

    # 4. The fee notice is sealed; the payment service checks seal and amount, takes the fee and answers.
    paid = applicant.post(f"{world.first}/case/{case}/pay", timeout=120)
    assert 'data-state="paid"' in paid.text and "PAY" in paid.text, paid.text[-1500:]
    notice = applicant.get(f"{world.first}/case/{case}/fee.pdf", timeout=30).content
    tampered = notice.replace(b"(Amount CNY 300.00)", b"(Amount CNY 030.00)")
    assert tampered != notice
    for body in ({"case": case, "amount": "3.00", "notice": notice}, {"case": case, "amount": "300.00", "notice": tampered}):
        refused = requests.post(world.payment + "/payments", json={**body, "notice": base64.b64encode(body["notice"]).decode()}, timeout=60)
        assert refused.status_code == 422, refused.text

    # 5. The kiosk: device grant approved from the applicant's session, then the photo's digest goes on the case.
    kiosk = requests.post(world.first + "/kiosk/start", timeout=30).json()
    assert requests.get(f"{world.first}/kiosk/{kiosk['kiosk']}", timeout=30).json()["status"] == "authorization_pending"
    confirm = applicant.get(kiosk["verification_uri_complete"], timeout=30)
    fields = {k: html.unescape(v) for k, v in re.findall(r'name="(csrf_token|user_code|form_token)" value="([^"]*)"', confirm.text)}
    assert {"csrf_token", "user_code", "form_token"} <= set(fields), confirm.text[-1500:]
    approved = applicant.post(world.idp + "/device/decide", data={**fields, "decision": "approve"}, timeout=30)
    assert approved.status_code == 200
    for _ in range(30):
        polled = requests.get(f"{world.first}/kiosk/{kiosk['kiosk']}", timeout=30).json()
        if polled["status"] != "slow_down":
            break
        time.sleep(1)
    assert polled["status"] == "logged_in" and polled["cases"] == [case], polled
    digest = hashlib.sha256(b"a frame from the counter camera").hexdigest()
    assert requests.post(f"{world.first}/kiosk/{kiosk['kiosk']}/photo", json={"case": case, "sha256": "x"}, timeout=30).status_code == 422
    assert (
        requests.post(f"{world.first}/kiosk/{kiosk['kiosk']}/photo", json={"case": case, "sha256": digest}, timeout=30).status_code == 200
    )
    assert digest[:16] in applicant.get(f"{world.first}/case/{case}", timeout=30).text

    # 6. The officer approves at level 3; Hallmark issues the permit, and the holder sees it at once.
    desk = requests.Session()
    assert requests.post(f"{world.first}/case/{case}/approve", timeout=30).status_code == 403  # nobody logged in
    page = world.sign_in(
        desk, world.first + "/login?as=officer", world.first, "demo-realname", {"login": officer_key, "step-up": officer_key}
    )
    assert f"approve-{case}" in page.text, page.text[-1500:]
    done = desk.post(f"{world.first}/case/{case}/approve", timeout=120)
    identifier = re.search(r"licence (1\.2\.156\.3005\.2\.\S+)", desk.get(f"{world.first}/case/{case}", timeout=30).text)
    assert done.status_code == 200 and identifier, done.text[-1500:]
    identifier = identifier.group(1).rstrip("<")
    assert identifier.split(".")[5] == licence_demo.FOOD_PERMIT
    assert identifier in applicant.get(world.idp + "/licences", timeout=30).text

    # 7. The second system compares the permit under its standing grant, and hears of the suspension.
    verifier = requests.Session()
    checked = verifier.post(world.second + "/verify", data={"identifier": identifier, "operator": ENTERPRISE}, timeout=60)
    assert 'data-match="true"' in checked.text and "<b>valid</b>" in checked.text, checked.text[-1500:]
    assert (
        'data-match="false"'
        in verifier.post(world.second + "/verify", data={"identifier": identifier, "operator": "别家"}, timeout=60).text
    )
    suspended = desk.post(f"{world.first}/case/{case}/suspend", timeout=60)
    assert 'id="notice"' not in suspended.text
    deadline = time.monotonic() + 60
    while 'data-event="suspended"' not in (events := verifier.get(world.second + "/verify", timeout=30).text):
        assert time.monotonic() < deadline, "no status event reached the second system"
        time.sleep(0.5)
    assert identifier in events
    forged = requests.post(world.second + "/events", data="e30.e30.", headers={"Content-Type": "application/secevent+jwt"}, timeout=30)
    assert forged.status_code == 400 and forged.json()["err"] == "invalid_request"

    # 8. The holder's "who looked" list names both systems' accesses with their purpose and matter.
    looked = applicant.get(world.idp + "/licences/access", timeout=30).text
    entries = re.findall(r'<li class="entry".*?</li>', looked, re.S)
    first = [e for e in entries if '<span class="mono">food-approval</span>' in e]
    second = [e for e in entries if '<span class="mono">food-approval-2</span>' in e]
    assert first and all("核验申请人营业执照" in e and "经您授权" in e for e in first), looked[-3000:]
    assert len(second) == 2 and all("核验食品经营许可证" in e and "依据常设授权" in e for e in second)
    assert all(f"<dd>{world.demo['approval']['matter']}</dd>" in e for e in first + second)


def test_the_example_uses_no_part_of_hallmark():
    """Public interfaces only: no import of Hallmark's packages (nor of the test harness) anywhere in the example."""
    import ast

    own = {"hsm", "core", "ca", "idp", "signing", "licenses", "admin", "hallmark", "keyagent", "tests"}
    for path in (ROOT / "examples" / "approval").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not {name.split(".")[0] for name in names} & own, f"{path.name} imports {names}"
