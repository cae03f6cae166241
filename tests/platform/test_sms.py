"""Text messages and the codes they carry (core.sms, core.otp) on SQLite and PostgreSQL: a code is queued with its
change, delivered through the outbox to the development inbox (shown at /dev/sms on this machine only) or to a
real HTTP gateway that checks the request's signature; codes are single use, expire, survive few wrong tries, and
sends are limited per number and per address."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import re
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from core import db as core_db
from core import otp, outbox, sms
from core.db import utc_now
from core.models import OneTimeCode, OutboxMessage, SmsInboxMessage

KEY = b"test-lookup-key-0123456789"
PHONE = "13812345678"


@pytest.fixture
def codes(migrated):
    _, sessions = migrated
    sms.install(sessions, sms.SmsSettings())
    return otp.TextCodes(sessions, KEY)


def _send(codes, phone=PHONE, purpose="login", ip="203.0.113.7") -> str:
    with core_db.transaction(codes.sessions) as db:
        return codes.send(db, phone=phone, purpose=purpose, ip=ip)


def _check(codes, code, phone=PHONE, purpose="login") -> otp.Checked:
    with core_db.transaction(codes.sessions) as db:
        return codes.check(db, phone=phone, purpose=purpose, code=code)


def _delivered_code(codes, phone=PHONE) -> str:
    """The code in the newest text to ``phone``, once every text queued to it has reached the inbox."""
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with codes.sessions() as db:
            waiting = db.scalars(
                select(OutboxMessage.id).where(OutboxMessage.target == sms.mask_phone(phone), OutboxMessage.state == "pending")
            ).first()
        if waiting is None:
            break
        outbox.deliver_due(codes.sessions, worker_id="test")
        time.sleep(0.05)
    with codes.sessions() as db:
        text = db.scalars(select(SmsInboxMessage.text).where(SmsInboxMessage.phone == phone).order_by(SmsInboxMessage.id.desc())).first()
    return re.search(r"验证码(\d{6})", text).group(1)


def test_a_code_reaches_the_inbox_through_the_outbox_and_works_once(codes):
    assert _send(codes, phone="+86 138-1234-5678") == "138****5678"
    with codes.sessions() as db:
        (message,) = db.scalars(select(OutboxMessage).where(OutboxMessage.kind == sms.KIND)).all()
        stored = db.scalars(select(OneTimeCode)).one()
    assert message.target == "138****5678"  # what staff see in the outbox list
    code = _delivered_code(codes)
    assert code not in stored.code_hash and PHONE not in stored.subject  # only keyed hashes at rest
    assert _check(codes, "000000" if code != "000000" else "111111") == otp.Checked(False, "wrong")
    assert _check(codes, code, purpose="recover") == otp.Checked(False, "expired")  # a code is for its purpose only
    assert _check(codes, f" {code[:3]} {code[3:]} ").ok  # typed with spaces
    assert _check(codes, code) == otp.Checked(False, "expired")  # single use


def test_a_change_that_rolls_back_texts_nobody(codes):
    with pytest.raises(RuntimeError), core_db.transaction(codes.sessions) as db:
        codes.send(db, phone=PHONE, purpose="login", ip="203.0.113.7")
        raise RuntimeError("the registration failed")
    outbox.deliver_due(codes.sessions, worker_id="test")
    with codes.sessions() as db:
        assert db.scalars(select(SmsInboxMessage)).all() == [] and db.scalars(select(OneTimeCode)).all() == []


def test_a_code_expires_dies_after_five_wrong_tries_and_only_the_newest_works(codes, migrated):
    _send(codes)
    first = _delivered_code(codes)
    with core_db.transaction(codes.sessions) as db:  # time passes: five minutes and a second
        db.execute(update(OneTimeCode).values(expires_at=utc_now() - timedelta(seconds=1)))
    assert _check(codes, first) == otp.Checked(False, "expired")

    _send(codes, phone="13900001111")
    code = _delivered_code(codes, "13900001111")
    wrong = "000000" if code != "000000" else "111111"
    assert [_check(codes, wrong, phone="13900001111").reason for _ in range(otp.MAX_TRIES)] == ["wrong"] * otp.MAX_TRIES
    assert _check(codes, code, phone="13900001111") == otp.Checked(False, "expired")  # guessed at: spent

    _send(codes, phone="13700002222", purpose="register")
    older = _delivered_code(codes, "13700002222")
    with core_db.transaction(codes.sessions) as db:
        db.execute(update(OneTimeCode).values(created_at=utc_now() - timedelta(minutes=2)))
    from core.models import RateLimit

    with core_db.transaction(codes.sessions) as db:  # the minute's limit has passed
        db.execute(RateLimit.__table__.delete())
    _send(codes, phone="13700002222", purpose="register")
    newer = _delivered_code(codes, "13700002222")
    if older != newer:
        assert _check(codes, older, phone="13700002222", purpose="register").ok is False  # the newer one replaced it
    assert _check(codes, newer, phone="13700002222", purpose="register").ok


def test_sends_are_limited_per_number_and_per_address(codes):
    _send(codes)
    with pytest.raises(otp.Limited) as again:
        _send(codes, ip="198.51.100.2")  # another address, the same number within the minute
    assert again.value.by == "number" and 0 < again.value.seconds <= 61
    for n in range(otp.PER_ADDRESS[0] - 1):  # the address's allowance, on other numbers
        _send(codes, phone=f"1590000{n:04d}")
    with pytest.raises(otp.Limited) as flood:
        _send(codes, phone="15900009999")
    assert flood.value.by == "address"
    with pytest.raises(sms.BadPhone):
        _send(codes, phone="12345", ip="192.0.2.1")


def _settled(sessions, target: str, done, *, later: bool = False, timeout: float = 30) -> OutboxMessage:
    """The outbox message to ``target`` once ``done(message)`` holds (the right-after-commit send may get there first)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as db:
            message = db.scalars(select(OutboxMessage).where(OutboxMessage.target == target)).first()
        if message is not None and done(message):
            return message
        outbox.deliver_due(sessions, worker_id="test", now=utc_now() + timedelta(minutes=5) if later else None)
        time.sleep(0.05)
    raise AssertionError(f"the message to {target} did not settle")


class Gateway(http.server.BaseHTTPRequestHandler):
    answers: list[int] = []
    seen: list[dict] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        expected = hmac.new(b"gateway-secret", self.headers["X-Hallmark-Timestamp"].encode() + b"\n" + body, hashlib.sha256).hexdigest()
        type(self).seen.append(
            {"body": json.loads(body), "key": self.headers["X-Hallmark-Key"], "signed": self.headers["X-Hallmark-Signature"] == expected}
        )
        status = type(self).answers.pop(0) if type(self).answers else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_the_http_gateway_gets_a_signed_template_request_and_its_answers_decide(migrated):
    _, sessions = migrated
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = sms.SmsSettings(
            sms_gateway_url=f"http://127.0.0.1:{server.server_port}/send",
            sms_gateway_key="hallmark",
            sms_gateway_secret="gateway-secret",
            sms_templates="login=SMS_0001 recover=SMS_0002",
        )
        assert "gateway-secret" not in repr(settings)
        sms.install(sessions, settings)
        codes = otp.TextCodes(sessions, KEY)
        Gateway.seen, Gateway.answers = [], [503]
        _send(codes)
        first = _settled(sessions, "138****5678", lambda m: m.attempts >= 1)
        assert first.state == "pending" and "503" in first.last_error  # a 503 is tried again later
        assert _settled(sessions, "138****5678", lambda m: m.state != "pending", later=True).state == "delivered"
        order = Gateway.seen[-1]
        assert order["signed"] and order["key"] == "hallmark"
        assert order["body"]["template"] == "SMS_0001" and order["body"]["phone"] == PHONE and order["body"]["sign_name"] == "政务服务"
        assert re.fullmatch(r"\d{6}", order["body"]["params"]["code"]) and order["body"]["params"]["minutes"] == "5"

        Gateway.answers = [400]
        _send(codes, phone="13900001111", purpose="recover")
        refused = _settled(sessions, "139****1111", lambda m: m.state != "pending")
        assert refused.state == "dead" and refused.attempts == 1  # refused for good: not retried
        _send(codes, phone="13700002222", purpose="register")  # no template for it
        missing = _settled(sessions, "137****2222", lambda m: m.state != "pending")
        assert missing.state == "dead" and "no gateway template" in missing.last_error
    finally:
        server.shutdown()
        server.server_close()


def test_gateway_settings_that_cannot_work_are_refused():
    from core.settings import ConfigError

    with pytest.raises(ConfigError, match="https"):
        sms.SmsSettings(sms_gateway_url="http://sms.example.gov.cn/send", sms_gateway_key="k", sms_gateway_secret="s")
    with pytest.raises(ConfigError, match="sms_gateway_key"):
        sms.SmsSettings(sms_gateway_url="https://sms.example.gov.cn/send")
    with pytest.raises(ConfigError, match="sms_templates"):
        sms.SmsSettings(sms_gateway_url="https://sms.example.gov.cn/send", sms_gateway_key="k", sms_gateway_secret="s", sms_templates="x")


def test_the_inbox_page_shows_texts_to_this_machine_only(tmp_path, migrated):
    from hallmark.app import create_app
    from tests.conftest import app_settings

    engine, sessions = migrated
    app = create_app(app_settings(tmp_path, engine.url.render_as_string(hide_password=False)))
    try:
        sms.install(sessions, sms.SmsSettings())  # this test's own session factory delivers to the inbox the app shows
        codes = otp.TextCodes(sessions, KEY)
        _send(codes)
        code = _delivered_code(codes)
        client = app.test_client()
        page = client.get("/dev/sms")
        assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
        assert "开发用短信收件箱" in page.text and code in page.text and "【政务服务】" in page.text
        assert client.get("/dev/sms", environ_base={"REMOTE_ADDR": "198.51.100.9"}).status_code == 404
    finally:
        app.extensions["components.services"].close()
