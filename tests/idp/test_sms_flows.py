"""Text codes at the IdP (issue 16 items 2 and 3) through the real app on SQLite and PostgreSQL: registration with a
confirmed number, SMS login (amr ``sms``, level 1), recovery of a forgotten password (with the real name for a
real-name account; every session ends; audited; the owner texted), and the abuse around them: unknown numbers
answered alike with nothing sent, code guessing, flooding a number or from an address, recovering someone else's
account. Texts are read from the development inbox after the outbox delivered them, as tests/platform/test_sms.py does."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
from sqlalchemy import func, select

from core import db as core_db
from core import outbox, sms
from core.db import utc_now
from core.identifiers import validate_resident_id
from core.models import AuditEvent, OutboxMessage, SmsInboxMessage
from idp import levels
from idp.models import Account, IdentityProofing, SSOSession
from idp.people import passwords, realname, sessions
from idp.settings import IdPSettings

ISSUER = "https://id.test"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "Correct horse 42"
NEW_PASSWORD = "Another horse 77"
PRIVACY = getattr(IdPSettings(), "privacy_version", "")
STRIP = re.compile(r'(csrf_token" value|data-csrf|nonce)="[^"]+"')


@pytest.fixture
def app(tmp_path, migrated, key_manager):
    from hallmark.app import create_app
    from tests.conftest import app_settings

    engine, _ = migrated
    app = create_app(app_settings(tmp_path, engine.url.render_as_string(hide_password=False), HALLMARK_PUBLIC_URL=ISSUER))
    yield app
    app.extensions["hallmark.services"].close()


def ctx_of(app):
    return app.extensions["hallmark.services"].idp


def client(app, address: str = "198.51.100.1"):
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = address
    return browser


def token(browser, path: str) -> str:
    return CSRF.search(browser.get(path).get_data(as_text=True)).group(1)


def post(browser, path: str, **form):
    if "csrf_token" not in form:
        form["csrf_token"] = token(browser, "/register" if path == "/register/code" else path)
    return browser.post(path, data=form, headers={"Accept-Language": "zh-CN,zh;q=0.9"})


def texts(app, phone: str) -> list[str]:
    """Every text to ``phone`` that reached the inbox, oldest first, once the outbox has delivered what is due."""
    sessions_ = ctx_of(app).sessions
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with sessions_() as db:
            pending = db.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.kind == sms.KIND, OutboxMessage.state == "pending")
            )
        if not pending:
            break
        outbox.deliver_due(sessions_, worker_id="test")
        time.sleep(0.05)
    with sessions_() as db:
        return list(db.scalars(select(SmsInboxMessage.text).where(SmsInboxMessage.phone == phone).order_by(SmsInboxMessage.id)))


def code_in(app, phone: str) -> str:
    return re.search(r"验证码(\d{6})", texts(app, phone)[-1]).group(1)


def audited(app, action: str) -> list[AuditEvent]:
    with core_db.read_only(ctx_of(app).sessions) as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


def a_minute_passes(app) -> None:
    """Forget every limit's count (core_rate_limits), as the minute per number would."""
    from core.models import RateLimit

    with core_db.transaction(ctx_of(app).sessions) as db:
        db.execute(RateLimit.__table__.delete())


def register(app, phone: str, address: str = "198.51.100.1") -> str:
    browser = client(app, address)
    assert post(browser, "/register/code", identifier=phone, csrf_token=token(browser, "/register")).status_code == 200
    done = post(browser, "/register", identifier=phone, code=code_in(app, phone), password=PASSWORD, password2=PASSWORD, privacy=PRIVACY)
    assert done.status_code == 303, done.get_data(as_text=True)
    with core_db.read_only(ctx_of(app).sessions) as db:
        account = db.scalar(select(Account).where(Account.mobile == phone))
        assert account.phone_confirmed_at is not None
    a_minute_passes(app)
    return account.id


def test_a_mobile_number_is_registered_only_with_the_code_texted_to_it(app):
    phone = "13800000001"
    browser = client(app)
    form = {"identifier": phone, "password": PASSWORD, "password2": PASSWORD, "privacy": PRIVACY}
    assert post(browser, "/register", **form).status_code == 400  # no code
    assert post(browser, "/register", **form, code="000000").status_code == 400  # no code was sent
    account_id = register(app, phone)
    assert [e.target for e in audited(app, "idp.account.phone_confirmed")] == [account_id]
    # The same number again: a code is texted all the same; only its holder learns that it is taken.
    again = client(app, "198.51.100.2")
    sent = post(again, "/register/code", identifier=phone, csrf_token=token(again, "/register"))
    assert sent.status_code == 200 and "已注册" not in sent.get_data(as_text=True)
    refused = post(again, "/register", **form, code=code_in(app, phone))
    assert refused.status_code == 400 and "已注册" in refused.get_data(as_text=True)


def test_sms_login_is_level_one_with_amr_sms_and_an_unknown_number_is_answered_alike_with_nothing_sent(app):
    phone, unknown = "13800000002", "13900000002"
    account_id = register(app, phone)
    pages = []
    for number in (phone, unknown):
        answer = post(client(app, "198.51.100.3"), "/login/sms", phone=number, action="send")
        assert answer.status_code == 200
        pages.append(
            STRIP.sub("", answer.get_data(as_text=True)).replace(number[:3] + "****" + number[-4:], "MASKED").replace(number, "NUMBER")
        )
    assert pages[0] == pages[1]
    assert texts(app, unknown) == []
    assert [json.loads(e.details)["phone"] for e in audited(app, "idp.sms.not_sent")] == ["139****0002"]
    browser = client(app, "198.51.100.3")
    done = post(browser, "/login/sms", phone=phone, code=code_in(app, phone), action="login")
    assert done.status_code == 303
    with core_db.read_only(ctx_of(app).sessions) as db:
        rows = db.scalars(select(SSOSession).where(SSOSession.account_id == account_id)).all()
        assert sorted((row.amr, row.acr) for row in rows) == [("pwd", 1), ("sms", 1)]  # registration's, and the SMS login's
    # A code for a number without an account is refused as a wrong code is.
    wrong = post(client(app, "198.51.100.3"), "/login/sms", phone=unknown, code="123456", action="login")
    assert wrong.status_code == 400 and "验证码错误或已失效" in wrong.get_data(as_text=True)


def test_the_levels_of_text_codes():
    assert levels.achieved(proofed=True, amr={"sms"}) == 1  # a text code alone: basic, even for a real-name account
    assert levels.with_mfa({"pwd", "sms"}) == {"pwd", "sms", "mfa"}
    levels.configure(second_factor=frozenset({2}))
    try:
        assert levels.achieved(proofed=True, amr={"pwd"}) == 1
        assert levels.achieved(proofed=True, amr={"pwd", "sms", "mfa"}) == 2
        assert levels.missing(2, has_session=True, proofed=True, amr={"pwd"}).second_factor
    finally:
        levels.configure(second_factor=frozenset())
    assert levels.achieved(proofed=True, amr={"pwd"}) == 2


def test_code_guessing_is_refused_audited_and_limited(app):
    phone = "13800000003"
    register(app, phone)
    post(client(app, "198.51.100.4"), "/login/sms", phone=phone, action="send")
    right = code_in(app, phone)
    wrong = [f"{(int(right) + n) % 1_000_000:06d}" for n in range(1, 6)]
    for guess in wrong:
        assert post(client(app, "198.51.100.4"), "/login/sms", phone=phone, code=guess, action="login").status_code == 400
    # Five wrong tries spend the code: the right one no longer works.
    assert post(client(app, "198.51.100.5"), "/login/sms", phone=phone, code=right, action="login").status_code == 400
    assert [json.loads(e.details)["reason"] for e in audited(app, "idp.sms.code_refused")] == ["wrong"] * 5 + ["expired"]


def test_texts_to_one_number_and_from_one_address_are_limited(app):
    phone = "13800000004"
    register(app, phone)
    first = post(client(app, "198.51.100.6"), "/recover", phone=phone, action="send")
    assert first.status_code == 200
    for number in (phone, "13900000004"):  # a number with an account and one without: the same limit
        post(client(app, "198.51.100.6"), "/recover", phone=number, action="send")  # the first for the unknown one
        again = post(client(app, "198.51.100.7"), "/recover", phone=number, action="send")
        assert again.status_code == 429 and int(again.headers["Retry-After"]) >= 1
    assert len(texts(app, phone)) == 2  # the registration code and one recovery code
    # From one address, codes to many numbers: ten, then refused.
    statuses = [post(client(app, "198.51.100.8"), "/register/code", identifier=f"1370000{n:04d}").status_code for n in range(12)]
    assert 429 in statuses and statuses.count(200) <= 10


def _proof(app, account_id: str, name: str, resident_id: str) -> None:
    ctx = ctx_of(app)
    rid = validate_resident_id(resident_id)
    with core_db.transaction(ctx.sessions) as db:
        db.add(
            IdentityProofing(
                account_id=account_id,
                resident_id_hash=realname.id_hash(ctx, rid),
                resident_id_masked=rid.masked(),
                legal_name=name,
                method="counter",
                source="test",
                location="",
                document="",
                verified_at=utc_now(),
            )
        )


def test_recovery_needs_the_code_and_for_a_real_name_account_the_name_and_id_and_ends_every_session(app):
    phone = "13800000005"
    account_id = register(app, phone)
    _proof(app, account_id, "张三", "11010519491231002X")
    with core_db.transaction(ctx_of(app).sessions) as db:
        sessions.start(db, db.get(Account, account_id), {"pwd"}, ip="192.0.2.1")
        assert len(sessions.active_for(db, account_id)) == 2  # the registration's and this one
    browser = client(app, "203.0.113.20")
    assert post(browser, "/recover", phone=phone, action="send").status_code == 200
    form = {"phone": phone, "new_password": NEW_PASSWORD, "new_password2": NEW_PASSWORD, "action": "reset"}
    # Someone else's real-name account: the code alone (a stolen phone) is not enough.
    refused = post(browser, "/recover", **form, code=code_in(app, phone), name="李四", resident_id="11010519491231002X")
    assert refused.status_code == 403
    assert [e.target for e in audited(app, "idp.recovery.refused")] == [account_id]
    with core_db.read_only(ctx_of(app).sessions) as db:
        assert passwords.verify(db.get(Account, account_id).password_hash, PASSWORD)  # unchanged
    # The code was spent by that try: a new one, with the right name and ID.
    assert post(browser, "/recover", phone=phone, action="send").status_code == 429  # within the minute
    a_minute_passes(app)
    post(browser, "/recover", phone=phone, action="send")
    done = post(browser, "/recover", **form, code=code_in(app, phone), name="张 三", resident_id="11010519491231002x")
    assert done.status_code == 303 and done.headers["Location"].startswith("/login?notice=password-reset")
    with core_db.read_only(ctx_of(app).sessions) as db:
        assert passwords.verify(db.get(Account, account_id).password_hash, NEW_PASSWORD)
        assert sessions.active_for(db, account_id) == []
    (event,) = audited(app, "idp.account.recovered")
    assert event.target == account_id and json.loads(event.details)["by"] == "sms+realname"
    assert "密码已于" in texts(app, phone)[-1]  # the owner is told
    # A number that has no account: answered as one that has, nothing sent, and a code cannot be made up.
    other = client(app, "203.0.113.21")
    ghost = post(other, "/recover", phone="13600000009", action="send")
    assert ghost.status_code == 200 and texts(app, "13600000009") == []
    assert post(other, "/recover", **{**form, "phone": "13600000009"}, code="123456").status_code == 400


def test_a_new_number_is_confirmed_by_a_code_to_it_and_the_old_one_is_told(app):
    phone, new = "13800000006", "13800000007"
    account_id = register(app, phone)
    browser = client(app, "198.51.100.9")
    # The registration's session cookie is in another client: sign in here with the password.
    token_ = token(browser, "/login")
    assert browser.post("/login", data={"identifier": phone, "password": PASSWORD, "csrf_token": token_}).status_code == 303
    assert post(browser, "/account/phone", phone=new, current_password="wrong one", action="send").status_code == 403
    assert post(browser, "/account/phone", phone=new, current_password=PASSWORD, action="send").status_code == 200
    assert (
        post(
            browser, "/account/phone", phone=new, code="000000" if code_in(app, new) != "000000" else "111111", action="change"
        ).status_code
        == 400
    )
    post(browser, "/account/phone", phone=new, current_password=PASSWORD, action="send")  # a limit: within the minute
    a_minute_passes(app)
    post(browser, "/account/phone", phone=new, current_password=PASSWORD, action="send")
    done = post(browser, "/account/phone", phone=new, code=code_in(app, new), action="change")
    assert done.status_code == 303
    with core_db.read_only(ctx_of(app).sessions) as db:
        assert db.get(Account, account_id).mobile == new
    assert "更换为138****0007" in texts(app, phone)[-1]
    assert [e.target for e in audited(app, "idp.account.phone_changed")] == [account_id]
    assert uuid.UUID(account_id)


@pytest.fixture
def strict_app(tmp_path, migrated, key_manager):
    """An IdP whose level 2 needs a text code after the password (second_factor_levels = "2")."""
    from hallmark.app import create_app
    from tests.conftest import app_settings

    engine, _ = migrated
    settings = app_settings(
        tmp_path, engine.url.render_as_string(hide_password=False), HALLMARK_PUBLIC_URL=ISSUER, HALLMARK_SECOND_FACTOR_LEVELS="2"
    )
    app = create_app(settings)
    yield app
    app.extensions["hallmark.services"].close()
    levels.configure(second_factor=frozenset())  # the policy is per process: back to the default for other tests


def test_a_text_code_after_the_password_is_the_second_factor_that_level_two_needs(strict_app):
    app = strict_app
    phone = "13800000008"
    account_id = register(app, phone)
    _proof(app, account_id, "张三", "11010519491231002X")
    browser = client(app, "198.51.100.10")
    assert (
        browser.post("/login", data={"identifier": phone, "password": PASSWORD, "csrf_token": token(browser, "/login")}).status_code == 303
    )

    def session() -> SSOSession:
        with core_db.read_only(ctx_of(app).sessions) as db:
            return db.scalars(
                select(SSOSession).where(
                    SSOSession.account_id == account_id, SSOSession.amr.like("%pwd%"), SSOSession.ip == "198.51.100.10"
                )
            ).one()

    assert session().acr == 1  # a real-name account, but a password alone is not level 2 here
    step = browser.get("/login/step-up?level=2&next=/account")
    assert step.status_code == 200 and "/login/second-factor?" in step.get_data(as_text=True)
    assert post(browser, "/login/second-factor", action="send", next="/account").status_code == 200
    wrong = post(
        browser, "/login/second-factor", action="check", code="000000" if code_in(app, phone) != "000000" else "111111", next="/account"
    )
    assert wrong.status_code == 400 and session().acr == 1
    done = post(browser, "/login/second-factor", action="check", code=code_in(app, phone), next="/account")
    assert done.status_code == 303
    row = session()
    assert row.amr.split() == ["mfa", "pwd", "sms"] and row.acr == 2


def test_an_sms_login_cancels_a_pending_closure_and_asks_for_a_newer_privacy_notice_first(app):
    """As after a password login (idp.pages._after_login): the text-code way in is no way around either."""
    from idp.models import PrivacyState
    from idp.people import privacy

    phone = "13800000009"
    account_id = register(app, phone)
    privacy.request_closure(ctx_of(app), account_id, PASSWORD)
    with core_db.transaction(ctx_of(app).sessions) as db:  # accepted an older notice than the one in force
        db.get(PrivacyState, account_id).accepted_version = "2000-01"
    browser = client(app, "198.51.100.9")
    post(browser, "/login/sms", phone=phone, action="send")
    done = post(browser, "/login/sms", phone=phone, code=code_in(app, phone), action="login")
    assert done.status_code == 303 and done.headers["Location"].startswith("/account/privacy/accept?"), done.headers["Location"]
    with core_db.read_only(ctx_of(app).sessions) as db:
        assert db.get(PrivacyState, account_id).closure_due_at is None  # the login ended the pending closure
