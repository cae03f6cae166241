"""``hallmark-key serve`` as a subprocess over real HTTP, with the demo USB key (a SoftHSM2
token of its own) holding a person-auth certificate issued by the CA in-process
(``hallmark.demo.prepare_demo_usb_key``, what ``make run`` uses).

Signatures are checked with ``cryptography`` against the certificate the agent returns.
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
from tests.keyagent_fixtures import new_resident_id

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
    response = agent.post({"purpose": "login", "data": b64url(data)})
    assert response.status_code == 200, response.text
    assert response.headers["Access-Control-Allow-Origin"] == HALL and "Origin" in response.headers["Vary"]
    certificate = verify(response.json(), data)
    assert certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "IDCCN-" + demo_key.resident_id
    # A second allowed origin signs its own challenges too.
    other = challenge(OTHER_HALL)
    assert agent.post({"purpose": "login", "data": b64url(other)}, origin=OTHER_HALL).status_code == 200
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
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
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
        response = running.post({"purpose": "login", "data": b64url(data)})
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
