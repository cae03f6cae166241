"""A resident's privacy and the pages a government hall ships, in a real browser on a real server (issue 16 items 6, 7).

Debian's chromium, headless, at a phone's size: registration with the privacy
notice, its re-acceptance after the version changed, the halls used and withdrawing
one, the data export (no secret, the ID masked), closure asked for, cancelled by
signing in, asked again and carried out by the periodic job's own function, the
login history in China Standard Time, the elder-friendly mode, and step-up naming
the hall and the matter with "back" answering ``access_denied`` to the hall.
axe-core checks every page touched. Screenshots go to ``/tmp/hallmark-shots/``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import secrets
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from sqlalchemy import select, update

from core import db as core_db
from core.db import utc_now
from core.models import AuditEvent
from idp.models import Account, Consent, PrivacyState, SSOSession
from idp.settings import IdPSettings
from tests import browser
from tests.browser import CHROMIUM, SHOTS
from tests.conftest import initialised_copy, run_hallmark, start_server, stop_server

pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason=browser.MISSING), pytest.mark.slow]

PASSWORD = "Lotus-pond 2026"
HALL = "http://127.0.0.1:9"  # the hall's redirect URI: answered by the test (Playwright's routing), never reached
HALL_NAME = "市网上办事大厅"
MATTER = ("MARRIAGE-APPT", "婚姻登记预约", "市民政局")
VERSION = IdPSettings().privacy_version


class Site:
    def __init__(self, instance, base, factory, client_id, people):
        self.instance, self.base, self.sessions, self.client_id, self.people = instance, base, factory, client_id, people

    def events(self, action: str) -> list[AuditEvent]:
        with self.sessions() as db:
            return list(db.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))

    def account(self, username: str) -> Account:
        with self.sessions() as db:
            row = db.scalar(select(Account).where(Account.username == username))
            db.expunge(row)
            return row

    def authorize_url(self, state: str, **extra) -> str:
        verifier = secrets.token_urlsafe(32)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": HALL + "/callback",
            "scope": "openid profile",
            "state": state,
            "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **extra,
        }
        return self.base + "/oauth/authorize?" + urlencode(query)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    instance = tmp_path_factory.mktemp("privacy")
    initialised_copy(instance)
    out = instance / "people.csv"
    assert run_hallmark(instance, "idp", "registry", "demo", "--count", "3", "--out", str(out)).returncode == 0
    with out.open(encoding="utf-8") as handle:
        people = list(csv.DictReader(handle))
    made = run_hallmark(instance, "idp", "client", "add", "--name", HALL_NAME, "--redirect-uri", HALL + "/callback", "--json")
    assert made.returncode == 0, made.stderr
    client_id = json.loads(made.stdout)["client_id"]
    code, name, department = MATTER
    assert run_hallmark(instance, "idp", "matter", "set", code, "--level", "3", "--name", name, "--department", department).returncode == 0
    process, base = start_server(instance, workers=1, log=instance / "server.log")
    engine = core_db.make_engine(f"sqlite:///{instance / 'hallmark.db'}")
    yield Site(instance, base, core_db.make_session_factory(engine), client_id, people)
    stop_server(process)
    engine.dispose()


@pytest.fixture
def phone(tmp_path):
    with browser.page(tmp_path / "profile", timeout_ms=20_000, user_agent=browser.IPHONE, **browser.PHONE) as page:
        page.context.route(HALL + "/**", lambda route: route.fulfill(status=200, content_type="text/plain", body="hall"))
        yield page


def axe_violations(page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now."""
    axe = pytest.importorskip("axe_playwright_python.sync_playwright", reason="pip install axe-playwright-python")
    found = axe.Axe().run(page).response["violations"]
    return [f"{v['id']}: {v['nodes'][0]['html'] if v['nodes'] else ''}" for v in found if v.get("impact") in ("serious", "critical")]


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def register(page, base: str, username: str) -> None:
    page.goto(base + "/register")
    page.get_by_label("手机号码或用户名").fill(username)
    page.get_by_label("密码", exact=True).fill(PASSWORD)
    page.get_by_label("再次输入密码").fill(PASSWORD)


def login(page, base: str, username: str, next_url: str | None = None) -> None:
    page.goto(base + "/login" + ("?" + urlencode({"next": next_url}) if next_url else ""))
    page.get_by_label("手机号码或用户名").fill(username)
    page.get_by_label("密码", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="登录", exact=True).click()


def sign_out(page) -> None:
    page.goto(page.url.split("/account")[0] + "/account")
    page.get_by_role("button", name="在此浏览器上退出登录").click()
    page.wait_for_url("**/logout/done**")


def test_privacy_notice_at_registration_and_again_when_it_changes(site, phone):
    page, base = phone, site.base
    register(page, base, "privacy1")
    assert VERSION in page.locator("main").inner_text()
    page.get_by_role("button", name="注册").click()  # the box is not ticked: refused, and no account is made
    assert page.get_by_role("alert").inner_text() == "注册前请阅读并同意隐私政策。"
    assert page.get_by_label("我已阅读并同意隐私政策").get_attribute("aria-invalid") == "true"
    assert axe_violations(page) == []
    with site.sessions() as db:
        assert db.scalar(select(Account).where(Account.username == "privacy1")) is None
    page.get_by_label("密码", exact=True).fill(PASSWORD)
    page.get_by_label("再次输入密码").fill(PASSWORD)
    page.get_by_label("我已阅读并同意隐私政策").check()
    shot(page, "register-privacy")
    page.get_by_role("button", name="注册").click()
    page.wait_for_url("**/account?notice=welcome")
    account = site.account("privacy1")
    accepted = [e for e in site.events("idp.privacy.accepted") if e.target == account.id]
    assert [json.loads(e.details)["version"] for e in accepted] == [VERSION]

    # The notice in force is newer than the one this resident accepted: asked at the next login, before going on.
    with core_db.transaction(site.sessions) as db:
        db.execute(update(PrivacyState).where(PrivacyState.account_id == account.id).values(accepted_version="2025-06"))
    sign_out(page)
    login(page, base, "privacy1", next_url="/account/history")
    page.wait_for_url("**/account/privacy/accept?**")
    assert page.locator("h1").inner_text() == "隐私政策已更新"
    assert axe_violations(page) == []
    shot(page, "privacy-accept")
    page.get_by_role("button", name="同意并继续").click()  # not ticked: refused, asked again
    assert "/account/privacy/accept" in page.url
    page.get_by_label("我已阅读并同意隐私政策").check()
    page.get_by_role("button", name="同意并继续").click()
    page.wait_for_url("**/account/history")
    accepted = [e for e in site.events("idp.privacy.accepted") if e.target == account.id]
    assert [json.loads(e.details)["version"] for e in accepted] == [VERSION, VERSION] and len({e.seq for e in accepted}) == 2
    with site.sessions() as db:
        assert db.get(PrivacyState, account.id).accepted_version == VERSION


def test_login_history_in_china_time_and_the_elder_mode(site, phone):
    page, base = phone, site.base
    register(page, base, "history1")
    page.get_by_label("我已阅读并同意隐私政策").check()
    page.get_by_role("button", name="注册").click()
    page.wait_for_url("**/account?**")

    page.get_by_role("link", name="登录记录").click()
    page.wait_for_url("**/account/history")
    body = page.locator("main").inner_text()
    with site.sessions() as db:
        row = db.scalar(select(SSOSession).join(Account).where(Account.username == "history1"))
    shown = (row.created_at + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M")
    assert f"{shown}" in body and "+08:00" in body, body
    assert "iPhone 上的 Safari" in body and "本机/内网" in body and "认证等级: 基础" in body
    assert axe_violations(page) == []
    shot(page, "login-history")

    size = page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
    toggle = page.get_by_role("button", name="长辈版")
    assert toggle.is_visible()
    toggle.click()
    page.wait_for_url("**/account/history")
    assert page.locator("html").get_attribute("class") == "elder"
    bigger = page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
    assert bigger >= size + 4, (size, bigger)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "nothing scrolls sideways"
    assert axe_violations(page) == []
    shot(page, "elder-history")
    page.goto(base + "/account")  # remembered: another page, the same mode
    assert page.locator("html").get_attribute("class") == "elder"
    assert axe_violations(page) == []
    shot(page, "elder-account")
    page.get_by_role("button", name="标准版").click()
    page.wait_for_url("**/account")
    assert page.locator("html").get_attribute("class") is None
    assert page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)") == size
    footer = page.locator("footer").inner_text()
    assert "服务热线" in footer and "12345" in footer and "隐私政策" in footer


def test_halls_used_and_withdrawing_one_and_step_up_back_to_the_hall(site, phone):
    page, base = phone, site.base
    register(page, base, "halls1")
    page.get_by_label("我已阅读并同意隐私政策").check()
    page.get_by_role("button", name="注册").click()
    page.wait_for_url("**/account?**")

    page.goto(site.authorize_url("s-consent"))
    page.wait_for_url("**/consent?**")
    page.get_by_role("button", name="同意").click()
    page.wait_for_url(HALL + "/callback?**")
    assert parse_qs(urlsplit(page.url).query)["state"] == ["s-consent"] and "code" in page.url

    page.goto(base + "/account/halls")
    body = page.locator("main").inner_text()
    assert HALL_NAME in body and "您的姓名和用户名" in body, body
    assert axe_violations(page) == []
    shot(page, "halls")
    account = site.account("halls1")
    page.get_by_role("button", name=f"撤回{HALL_NAME}的授权").click()
    page.wait_for_url("**/account/halls?notice=hall-revoked")
    assert [e.target for e in site.events("idp.hall.revoked") if e.actor == f"account:{account.id}"] == [site.client_id]
    with site.sessions() as db:
        assert db.get(Consent, (account.id, site.client_id)) is None
    page.goto(site.authorize_url("s-again"))  # the hall must ask again
    page.wait_for_url("**/consent?**")

    # A matter that needs level 3: the step-up page names the hall and the matter; "back" answers access_denied.
    page.goto(site.authorize_url("s-step-up", matter=MATTER[0]))
    page.wait_for_url("**/login/step-up?**")
    body = page.locator("main").inner_text()
    assert HALL_NAME in body and MATTER[1] in body and MATTER[2] in body, body
    assert axe_violations(page) == []
    shot(page, "step-up-hall")
    page.get_by_role("link", name=f"不继续，返回{HALL_NAME}").click()
    page.wait_for_url(HALL + "/callback?**")
    answer = parse_qs(urlsplit(page.url).query)
    assert answer["error"] == ["access_denied"] and answer["state"] == ["s-step-up"] and "code" not in answer


def test_export_and_closure(site, phone):
    page, base = phone, site.base
    person = site.people[1]
    register(page, base, "closer1")
    page.get_by_label("我已阅读并同意隐私政策").check()
    page.get_by_role("button", name="注册").click()
    page.wait_for_url("**/account?**")
    page.goto(base + "/account/verify")
    page.get_by_label("姓名").fill(person["name"])
    page.get_by_label("公民身份号码").fill(person["resident_id"])
    page.locator("main form button[type=submit]").click()
    page.wait_for_url("**/account?notice=verified")

    answer = page.request.get(base + "/account/export")
    assert answer.status == 200 and answer.headers["content-type"].startswith("application/json")
    assert "attachment" in answer.headers["content-disposition"]
    text = answer.text()
    data = json.loads(text)
    assert data["account"]["username"] == "closer1" and data["privacy"]["accepted_version"] == VERSION
    masked = person["resident_id"][:3] + "*" * 11 + person["resident_id"][-4:]
    assert data["proofing"]["resident_id"] == masked and person["resident_id"] not in text
    assert data["logins"] and all(login["ip"] == "127.0.0.1" for login in data["logins"])
    with site.sessions() as db:
        account = db.scalar(select(Account).where(Account.username == "closer1"))
        sids = list(db.scalars(select(SSOSession.sid).where(SSOSession.account_id == account.id)))
        secrets_kept = [account.password_hash, *sids, *db.scalars(select(SSOSession.secret).where(SSOSession.account_id == account.id))]
    for secret in secrets_kept:
        assert secret not in text
    assert "password_hash" not in text and "secret" not in text

    page.goto(base + "/account")
    page.get_by_role("link", name="注销账号").click()
    page.wait_for_url("**/account/close")
    assert axe_violations(page) == []
    shot(page, "close")
    page.get_by_label("当前密码").fill("Wrong pond 2026")
    page.get_by_role("button", name="申请注销账号").click()
    assert page.get_by_role("alert").is_visible()
    page.get_by_label("当前密码").fill(PASSWORD)
    page.get_by_role("button", name="申请注销账号").click()
    page.wait_for_url("**/account/close")
    assert "撤销注销申请" in page.locator("main").inner_text()
    assert axe_violations(page) == []
    requested = [e for e in site.events("idp.account.closure_requested") if e.target == account.id]
    assert len(requested) == 1

    # Signing in during the cooling-off period cancels the closure.
    sign_out(page)
    login(page, base, "closer1")
    page.wait_for_url("**/account?notice=closure-cancelled")
    assert [json.loads(e.details)["reason"] for e in site.events("idp.account.closure_cancelled") if e.target == account.id] == ["login"]

    # Asked again, and the periodic job (its own function, as the server runs it) carries it out once it is due.
    page.goto(base + "/account/close")
    page.get_by_label("当前密码").fill(PASSWORD)
    page.get_by_role("button", name="申请注销账号").click()
    page.wait_for_url("**/account/close")
    ran = run_hallmark(site.instance, "idp", "closures", "run")
    assert ran.returncode == 0 and ran.stdout.startswith("0 "), ran.stdout + ran.stderr  # not due yet
    with site.sessions() as db:
        assert db.get(Account, account.id).status == "active"
    due = (utc_now() + timedelta(days=IdPSettings().closure_cooling_off_days, minutes=1)).isoformat()
    ran = run_hallmark(site.instance, "idp", "closures", "run", "--as-of", due)
    assert ran.returncode == 0 and ran.stdout.startswith("1 "), ran.stdout + ran.stderr
    with site.sessions() as db:
        assert db.get(Account, account.id).status == "closed"
        state = db.get(PrivacyState, account.id)
        assert state.closed_at is not None and state.delete_after is not None and state.closure_due_at is None
        live = db.scalars(select(SSOSession).where(SSOSession.account_id == account.id, SSOSession.ended_at.is_(None))).all()
        assert live == []
    assert [e.target for e in site.events("idp.account.closed")] == [account.id]
    page.goto(base + "/account")
    page.wait_for_url("**/login?**")
    login(page, base, "closer1")
    page.get_by_role("alert").wait_for()  # a closed account does not sign in
    assert urlsplit(page.url).path == "/login"
    with site.sessions() as db:
        assert db.scalars(select(SSOSession).where(SSOSession.account_id == account.id, SSOSession.ended_at.is_(None))).all() == []


def verify_real_name(page, base: str, person: dict) -> None:
    page.goto(base + "/account/verify")
    page.get_by_label("姓名").fill(person["name"])
    page.get_by_label("公民身份号码").fill(person["resident_id"])
    page.locator("main form button[type=submit]").click()
    page.wait_for_url("**/account?notice=verified")


def test_org_matters_for_the_legal_representative(site, phone, tmp_path):
    page, base = phone, site.base
    register(page, base, "agent9")  # the agent: real-name verified, as agents must be
    page.get_by_label("我已阅读并同意隐私政策").check()
    page.get_by_role("button", name="注册").click()
    page.wait_for_url("**/account?**")
    verify_real_name(page, base, site.people[2])
    sign_out(page)
    register(page, base, "boss9")
    page.get_by_label("我已阅读并同意隐私政策").check()
    page.get_by_role("button", name="注册").click()
    page.wait_for_url("**/account?**")
    verify_real_name(page, base, site.people[0])
    made = run_hallmark(
        site.instance,
        "idp",
        "enterprise",
        "add",
        "--credit-code",
        "91350100M000100Y43",
        "--name",
        "福州示例科技有限公司",
        "--representative",
        "boss9",
    )
    assert made.returncode == 0, made.stdout + made.stderr

    page.goto(base + "/account#enterprises")
    page.get_by_text("授权经办人", exact=True).click()
    page.get_by_label("经办人的手机号码或用户名").fill("agent9")
    page.get_by_label("事项（事项编码，用逗号分隔）").fill(MATTER[0])
    page.locator("input[name=expires]").fill((utc_now() + timedelta(days=30)).strftime("%Y-%m-%d"))
    page.get_by_role("button", name="授权", exact=True).click()
    page.wait_for_url("**/account?notice=agent-authorised**")

    page.get_by_role("link", name="谁可以办理哪些事项").click()
    page.wait_for_url("**/account/enterprises/*/matters")
    matters_path = urlsplit(page.url).path
    row = page.locator("table.org-matters tr", has_text=MATTER[1])
    assert "agent9" in row.inner_text()
    assert page.locator("table.org-matters").inner_text().count("agent9") == 1  # named for that matter only
    assert "91350100M000100Y43" not in page.content()  # the credit code is masked, as everywhere
    assert axe_violations(page) == []
    shot(page, "org-matters")

    # Not the representative: refused.
    sign_out(page)
    login(page, base, "agent9")
    page.wait_for_url("**/account")
    answer = page.request.get(base + matters_path)
    assert answer.status == 403


def test_login_tabs_for_individuals_and_legal_persons(site, phone):
    page, base = phone, site.base
    page.goto(base + "/login")
    tabs = page.get_by_role("tablist", name="登录身份")
    person, org = tabs.get_by_role("tab", name="个人"), tabs.get_by_role("tab", name="法人")
    assert person.get_attribute("aria-selected") == "true" and org.get_attribute("aria-selected") == "false"
    assert page.get_by_role("tabpanel").get_attribute("aria-labelledby") == "tab-person"
    assert axe_violations(page) == []
    # The keyboard of the ARIA tabs pattern: the selected tab is in the tab order, arrows move, Enter opens.
    person.focus()
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.id") == "tab-org"
    page.keyboard.press("Enter")
    page.wait_for_url("**/login?as=org**")
    org = page.get_by_role("tab", name="法人")
    assert org.get_attribute("aria-selected") == "true" and org.get_attribute("tabindex") == "0"
    assert "选择要代表的企业" in page.get_by_role("tabpanel").inner_text()
    assert axe_violations(page) == []
    shot(page, "login-org-tab")
    # Signing in on the 法人 tab goes on to choosing the enterprise.
    register(page, base, "tabs1")
    page.get_by_label("我已阅读并同意隐私政策").check()
    page.get_by_role("button", name="注册").click()
    page.wait_for_url("**/account?**")
    sign_out(page)
    page.goto(base + "/login?as=org")
    page.get_by_label("手机号码或用户名").fill("tabs1")
    page.get_by_label("密码", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="登录", exact=True).click()
    page.wait_for_url("**/account/act-for**")
