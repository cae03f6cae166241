"""``hallmark-key serve`` as a subprocess over real HTTP, with the demo USB key (a SoftHSM2
token of its own) holding a person-auth certificate issued by the CA in-process
(``hallmark.demo.prepare_demo_usb_key``, what ``make run`` uses).

A page's request only makes a pending signing request; the holder confirms it on the
agent's own page. Here that page's form post is sent over HTTP with the headers a
browser sends from it (tests/keyagent/test_keyagent_confirm_browser.py does it in
chromium). Signatures are checked with ``cryptography`` against the certificate the
agent returns.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import requests
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import ROOT, free_port
from tests.keyagent_fixtures import agent_outcome, ask_agent, confirmation_token, new_resident_id, post_confirmation

pytestmark = pytest.mark.slow
HALL = "http://hall.test:8000"
OTHER_HALL = "https://county.hall.test"
EVIL = "https://evil.example"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def demo_key(tmp_path_factory, key_manager):
    from ca import hierarchy
    from ca.context import CAContext
    from ca.status import publication
    from core import db, events
    from hallmark import components, demo

    folder = tmp_path_factory.mktemp("agent")
    engine = db.make_engine(f"sqlite:///{folder / 'ca.db'}")
    components.upgrade_database(engine)
    ctx = CAContext(sessions=db.make_session_factory(engine), keys=key_manager, public_url=HALL, lookup_key=b"test-lookup-key-0123456789")
    publication.subscribe(events.of(ctx.sessions))
    hierarchy.init_hierarchy(ctx, actor="test")
    resident_id = new_resident_id()
    made = demo.prepare_demo_usb_key(ctx, folder, resident_id=resident_id, name="张三")
    assert made.serial and made.token_label == "demo-usb-key"
    again = demo.prepare_demo_usb_key(ctx, folder, resident_id=resident_id, name="张三")
    assert again.serial is None  # already enrolled: left alone
    # Another demo person: the demo key is made afresh, so it never holds two certificates to choose from.
    resident_id = new_resident_id()
    other = demo.prepare_demo_usb_key(ctx, folder, resident_id=resident_id, name="张三")
    assert other.serial and other.serial != made.serial
    yield SimpleNamespace(agent_config=made.agent_config, token_label=made.token_label, resident_id=resident_id, ctx=ctx)
    engine.dispose()


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HALLMARK_", "SOFTHSM2_"))}
    env["XDG_CONFIG_HOME"] = "/nonexistent-hallmark-key-test"
    env.update(extra)
    return env


class RunningAgent:
    def __init__(self, demo_key, tmp_path, *args, stdin_pin: str | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"agent-{self.port}.log"
        self.log = open(self.log_path, "w")
        command = [sys.executable, "-m", "keyagent.cli", "serve", "--port", str(self.port), *args]
        self.process = subprocess.Popen(
            command, env=clean_env(), cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        if stdin_pin is not None:
            self.process.stdin.write(stdin_pin + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line.startswith("ready "):
            self.stop()
            raise AssertionError(f"agent did not start: {line!r} {self.log_path.read_text()}")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for pipe in (self.process.stdin, self.process.stdout):
            pipe.close()
        self.log.close()

    def text_log(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def post(self, body, origin: str | None = HALL, **headers) -> requests.Response:
        if origin is not None:
            headers["Origin"] = origin
        return requests.post(
            self.base + "/v1/sign", data=json.dumps(body), headers={"Content-Type": "application/json", **headers}, timeout=30
        )

    def sign(self, body, origin: str = HALL) -> requests.Response:
        """Ask, confirm on the agent's page as the holder, collect the outcome."""
        asked = ask_agent(self.base, body, origin)
        assert asked.status_code == 202, asked.text
        confirmed = post_confirmation(asked.json()["confirm_url"], confirmation_token(asked.json()["confirm_url"]))
        assert confirmed.status_code == 303, confirmed.text
        return agent_outcome(self.base, asked.json()["request"], origin)


@pytest.fixture(scope="module")
def agent(demo_key, tmp_path_factory):
    running = RunningAgent(
        demo_key, tmp_path_factory.mktemp("agent-log"), "--config", str(demo_key.agent_config), "--allow-origin", OTHER_HALL
    )
    yield running
    running.stop()


def challenge(origin: str = HALL, lifetime: int = 120) -> bytes:
    return f"hallmark-login/1 {origin} {b64url(os.urandom(24))} {int(time.time()) + lifetime}".encode()


def verify(answer: dict, data: bytes) -> x509.Certificate:
    certificate = x509.load_der_x509_certificate(base64.b64decode(answer["certificate"]))
    assert answer["algorithm"] == "ecdsa-with-SHA256"
    certificate.public_key().verify(unb64url(answer["signature"]), data, ec.ECDSA(hashes.SHA256()))  # raises if wrong
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in answer["chain"]]
    certificate.verify_directly_issued_by(chain[0])
    return certificate


def test_status_lists_the_enrolled_certificate(agent, demo_key):
    response = requests.get(agent.base + "/v1/status", headers={"Origin": HALL}, timeout=10)
    assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == HALL
    body = response.json()
    assert body["version"] == "1" and len(body["certificates"]) == 1
    entry = body["certificates"][0]
    masked = demo_key.resident_id[:3] + "*" * 11 + demo_key.resident_id[-4:]
    assert "IDCCN-" + masked in entry["subject"] and demo_key.resident_id not in response.text  # pages get the ID masked
    assert len(entry["fingerprint"]) == 64 and entry["id"]


def test_login_challenge_signed_for_an_allowed_origin(agent, demo_key):
    data = challenge()
    response = agent.sign({"purpose": "login", "data": b64url(data)})
    assert response.status_code == 200, response.text
    assert response.headers["Access-Control-Allow-Origin"] == HALL and "Origin" in response.headers["Vary"]
    certificate = verify(response.json(), data)
    assert certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "IDCCN-" + demo_key.resident_id
    # A second allowed origin signs its own challenges too.
    other = challenge(OTHER_HALL)
    assert agent.sign({"purpose": "login", "data": b64url(other)}, origin=OTHER_HALL).status_code == 200
    log = agent.text_log()
    assert f"signed login challenge for origin {HALL}" in log and hashlib.sha256(data).hexdigest() in log
    pin = next(line for line in demo_key.agent_config.read_text().splitlines() if line.startswith("pin")).split('"')[1]
    assert pin not in log and demo_key.resident_id not in log


def test_origins_not_on_the_allow_list_are_refused(agent):
    data = challenge(EVIL)
    for origin in (EVIL, "null", None, HALL + ".evil.example"):
        response = agent.post({"purpose": "login", "data": b64url(data)}, origin=origin)
        assert response.status_code == 403 and "signature" not in response.json()
        assert "Access-Control-Allow-Origin" not in response.headers
    status = requests.get(agent.base + "/v1/status", headers={"Origin": EVIL}, timeout=10)
    assert status.status_code == 403 and "Access-Control-Allow-Origin" not in status.headers
    assert requests.get(agent.base + "/v1/status", timeout=10).status_code == 403  # no Origin at all
    assert f"origin '{EVIL}': not on the allow-list" in agent.text_log()
    # DNS rebinding: an allowed Origin, but the request was addressed to another host name.
    rebound = agent.post({"purpose": "login", "data": b64url(challenge())}, Host=f"evil.example:{agent.port}")
    assert rebound.status_code == 403 and rebound.json()["error"] == "bad_host"


def test_challenge_for_another_origin_expired_or_malformed_is_not_signed(agent):
    relayed = agent.post({"purpose": "login", "data": b64url(challenge(HALL))}, origin=OTHER_HALL)
    assert relayed.status_code == 403 and relayed.json()["error"] == "origin_mismatch" and "signature" not in relayed.json()
    expired = agent.post({"purpose": "login", "data": b64url(challenge(lifetime=-5))})
    assert expired.status_code == 400 and expired.json()["error"] == "expired_challenge"
    too_long = agent.post({"purpose": "login", "data": b64url(challenge(lifetime=3600))})
    assert too_long.status_code == 400
    for data in (
        b"hallmark-login/1 " + HALL.encode(),
        b"\xff\xfe",
        b"sign this please",
        b"hallmark-login/2 " + HALL.encode() + b" abcdefghijklmnopq 1",
    ):
        response = agent.post({"purpose": "login", "data": b64url(data)})
        assert response.status_code == 400 and "signature" not in response.json()
    # Request shape.
    assert agent.post({"purpose": "pay", "data": "AA"}).status_code == 400
    assert agent.post({"purpose": "login", "data": "not base64!"}).status_code == 400
    assert agent.post({"purpose": "login", "data": b64url(challenge()), "certificate": "ffff"}).status_code == 404
    assert agent.post([1, 2]).status_code == 400
    form = requests.post(agent.base + "/v1/sign", data={"purpose": "login"}, headers={"Origin": HALL}, timeout=10)
    assert form.status_code == 415  # only application/json, which browsers always preflight


def test_preflight_answers_allowed_origins_only(agent):
    headers = {
        "Origin": HALL,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
        "Access-Control-Request-Private-Network": "true",
    }
    response = requests.options(agent.base + "/v1/sign", headers=headers, timeout=10)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == HALL
    assert response.headers["Access-Control-Allow-Methods"] == "GET, POST"
    assert response.headers["Access-Control-Allow-Headers"] == "Content-Type"
    assert response.headers["Access-Control-Allow-Private-Network"] == "true"
    refused = requests.options(agent.base + "/v1/sign", headers={**headers, "Origin": EVIL}, timeout=10)
    assert refused.status_code == 403
    assert not any(h.lower().startswith("access-control-allow") for h in refused.headers)


def _signed_attributes(document: bytes) -> bytes:
    return cms.CMSAttributes(
        [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(document).digest()]}),
        ]
    ).dump()


def test_a_login_certificate_never_signs_a_document(agent):
    """The demo key holds only a person-auth (login) certificate: document data are refused, whatever page asks.

    Signing documents with a signing certificate through the agent is in tests/signing/test_signing_remote.py.
    """
    data = _signed_attributes(b"%PDF-1.7 an application for a housing subsidy")
    response = agent.post({"purpose": "document", "data": b64url(data), "description": "住房补贴申请表.pdf"})
    assert response.status_code == 409 and response.json()["error"] == "no_certificate", response.text
    assert "signature" not in response.json()
    # A login challenge is not document data, and document data are not a login challenge.
    assert agent.post({"purpose": "document", "data": b64url(challenge())}).status_code == 400
    assert agent.post({"purpose": "login", "data": b64url(data)}).status_code == 400


def test_pin_from_a_prompt_is_not_echoed(demo_key, tmp_path):
    settings = demo_key.agent_config.read_text()
    pin = next(line for line in settings.splitlines() if line.startswith("pin")).split('"')[1]
    without_pin = tmp_path / "agent.toml"
    without_pin.write_text("\n".join(line for line in settings.splitlines() if not line.startswith("pin")) + "\n")
    running = RunningAgent(demo_key, tmp_path, "--config", str(without_pin), stdin_pin=pin)
    try:
        data = challenge()
        response = running.sign({"purpose": "login", "data": b64url(data)})
        assert response.status_code == 200
        verify(response.json(), data)
    finally:
        running.stop()
    assert pin not in running.text_log()


def test_wrong_pin_and_wildcard_origins_stop_the_agent(demo_key, tmp_path):
    wrong = subprocess.run(
        [sys.executable, "-m", "keyagent.cli", "serve", "--config", str(demo_key.agent_config), "--port", str(free_port())],
        env=clean_env(HALLMARK_KEY_PIN="00000000"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 1 and "wrong PIN" in wrong.stderr and "00000000" not in wrong.stderr + wrong.stdout
    wildcard = subprocess.run(
        [sys.executable, "-m", "keyagent.cli", "serve", "--config", str(demo_key.agent_config), "--allow-origin", "*"],
        env=clean_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wildcard.returncode == 2 and "no wildcards" in wildcard.stderr


def test_list_shows_which_key_has_a_certificate(demo_key):
    listed = subprocess.run(
        [sys.executable, "-m", "keyagent.cli", "list", "--config", str(demo_key.agent_config), "--login"],
        env=clean_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "token 'demo-usb-key'" in listed.stdout and "key on token" in listed.stdout
    assert (
        "key pair 'person-auth" in listed.stdout
        and f"serialNumber=IDCCN-{demo_key.resident_id[:3]}" in listed.stdout
        and demo_key.resident_id not in listed.stdout
    )
    assert "CA certificate" in listed.stdout


# -- the holder's confirmation -----------------------------------------------------------------


def test_an_allowed_origin_gets_no_signature_without_the_holders_confirmation(agent):
    """A plain HTTP client sending an allowed Origin (what any page of that site could do) gets a pending request, no signature."""
    data = challenge()
    response = agent.post({"purpose": "login", "data": b64url(data)})
    assert response.status_code == 202, response.text
    asked = response.json()
    assert "signature" not in asked and asked["status"] == "pending" and 0 < asked["expires_in"] <= 120
    assert asked["confirm_url"] == f"{agent.base}/confirm/{asked['request']}"  # the agent's own origin
    assert asked["result_url"] == f"{agent.base}/v1/sign/{asked['request']}"
    waited = agent_outcome(agent.base, asked["request"], HALL, wait=1)
    assert waited.status_code == 202 and waited.json()["status"] == "pending" and "signature" not in waited.text
    # Another allowed origin, or any other one, learns nothing about it.
    assert agent_outcome(agent.base, asked["request"], OTHER_HALL).status_code == 404
    assert agent_outcome(agent.base, asked["request"], EVIL).status_code == 403
    assert "waiting for the holder's confirmation" in agent.text_log()


def test_forged_confirmations_are_refused(agent):
    data = challenge()
    asked = agent.post({"purpose": "login", "data": b64url(data)}).json()
    url = asked["confirm_url"]
    token = confirmation_token(url)
    forged = {
        "no token": post_confirmation(url, None),
        "wrong token": post_confirmation(url, token[:-2] + ("AA" if not token.endswith("AA") else "BB")),
        "the hall's Origin": post_confirmation(url, token, Origin=HALL),
        "another origin": post_confirmation(url, token, Origin=EVIL),
        "no Origin": post_confirmation(url, token, Origin=None),
        "Origin null": post_confirmation(url, token, Origin="null"),
        "another host name of the agent": post_confirmation(url, token, Origin=f"http://localhost:{agent.port}"),
        "cross-site": post_confirmation(url, token, **{"Sec-Fetch-Site": "cross-site"}),
        "same-site": post_confirmation(url, token, **{"Sec-Fetch-Site": "same-site"}),
    }
    for what, response in forged.items():
        assert response.status_code == 403, (what, response.status_code)
        assert "没有签名" in response.text and "nothing was signed" in response.text, what
        assert "Access-Control-Allow-Origin" not in response.headers, what
    json_body = requests.post(url, json={"decision": "approve", "csrf_token": token}, headers={"Origin": agent.base}, timeout=10)
    assert json_body.status_code == 415
    # None of them decided anything: the request still waits, and the holder can still confirm it.
    assert agent_outcome(agent.base, asked["request"], HALL).status_code == 202
    assert post_confirmation(url, token).status_code == 303
    signed = agent_outcome(agent.base, asked["request"], HALL)
    assert signed.status_code == 200 and signed.json()["status"] == "signed"
    verify(signed.json(), data)
    log = agent.text_log()
    assert "not the agent's own page" in log and token not in log


def test_the_confirmation_page_cannot_be_framed_or_read_by_a_page(agent):
    asked = agent.post({"purpose": "login", "data": b64url(challenge())}).json()
    url = asked["confirm_url"]
    page = requests.get(url, headers={"Origin": HALL}, timeout=10)
    assert page.status_code == 200 and "Access-Control-Allow-Origin" not in page.headers  # a hall's script cannot read it
    policy = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "form-action 'self'" in policy and "script-src" not in policy
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    assert page.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    text = page.text
    assert HALL in text and "用 USB Key 登录该网站" in text and "Log in to this site with the USB key" in text
    assert text.index("确认签名") < text.index("Sign</span>")  # Chinese first, English second
    for dest in ("iframe", "empty", "script"):
        framed = requests.get(url, headers={"Sec-Fetch-Dest": dest}, timeout=10)
        assert framed.status_code == 403 and "csrf_token" not in framed.text, dest
    assert requests.get(f"{agent.base}/confirm/{'x' * 24}", timeout=10).status_code == 404
    rebound = requests.get(url, headers={"Host": f"evil.example:{agent.port}"}, timeout=10)
    assert rebound.status_code == 403 and "csrf_token" not in rebound.text


def test_a_request_is_decided_once_and_its_signature_handed_out_once(agent):
    data = challenge()
    asked = agent.post({"purpose": "login", "data": b64url(data)}).json()
    url, token = asked["confirm_url"], confirmation_token(asked["confirm_url"])
    assert post_confirmation(url, token).status_code == 303
    again = post_confirmation(url, token)
    assert again.status_code == 409 and "已经处理过" in again.text
    assert agent_outcome(agent.base, asked["request"], OTHER_HALL).status_code == 404  # only the origin that asked
    first = agent_outcome(agent.base, asked["request"], HALL)
    assert first.status_code == 200
    verify(first.json(), data)
    replayed = agent_outcome(agent.base, asked["request"], HALL)
    assert replayed.status_code == 410 and replayed.json()["error"] == "already_used" and "signature" not in replayed.json()
    assert post_confirmation(url, token, decision="deny").status_code == 409
    shown = requests.get(url, timeout=10)
    assert "已签名" in shown.text and "csrf_token" not in shown.text


def test_a_denied_request_is_refused(agent):
    asked = agent.post({"purpose": "login", "data": b64url(challenge())}).json()
    url, token = asked["confirm_url"], confirmation_token(asked["confirm_url"])
    assert post_confirmation(url, token, decision="deny").status_code == 303
    for _ in range(2):
        denied = agent_outcome(agent.base, asked["request"], HALL)
        assert denied.status_code == 403 and denied.json()["error"] == "denied" and "signature" not in denied.json()
    assert post_confirmation(url, token).status_code == 409  # no second thoughts through a replayed form
    assert "已拒绝" in requests.get(url, timeout=10).text
    assert "the holder denied" in agent.text_log()


def test_an_expired_request_is_refused(demo_key, tmp_path):
    running = RunningAgent(demo_key, tmp_path, "--config", str(demo_key.agent_config), "--request-lifetime", "1")
    try:
        asked = running.post({"purpose": "login", "data": b64url(challenge())}).json()
        url, token = asked["confirm_url"], confirmation_token(asked["confirm_url"])
        time.sleep(2)
        late = post_confirmation(url, token)
        assert late.status_code == 410 and "已过期" in late.text
        expired = agent_outcome(running.base, asked["request"], HALL)
        assert expired.status_code == 410 and expired.json()["error"] == "expired" and "signature" not in expired.json()
        assert "已过期" in requests.get(url, timeout=10).text
    finally:
        running.stop()
