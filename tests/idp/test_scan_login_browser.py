"""Scan-to-login on a real server: a desktop browser and a phone (two chromium contexts), and the refusals.

The desktop is Debian's chromium at a desktop size with a Windows user agent; the
phone a second context at a phone's size, signed in. The desktop's login page
draws a QR code (SVG from the server) and polls; the phone opens what the QR code
holds, sees which browser asks from where and when, and confirms; the desktop is
then signed in at most at the phone's level, never level 3. The refusals (a second
phone session, a second answer, an expired code, a poll without the desktop's
cookie) are driven over plain HTTP too, where no page script polls in between.
axe-core checks the new pages. Screenshots go to ``/tmp/hallmark-shots/``.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import select, update

from core import db as core_db
from core.models import AuditEvent
from idp.models import ScanLogin, SSOSession
from idp.people import sessions
from tests.browser import ARGS, CHROMIUM, IPHONE, PHONE, SHOTS
from tests.conftest import initialised_copy, run_hallmark, start_server, stop_server
from tests.idp.world import ServerWorld

pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="chromium not found: apt-get install -y chromium"), pytest.mark.slow]
WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"


class World(ServerWorld):
    def events(self, action: str) -> list[AuditEvent]:
        with self.sessions() as db:
            return list(db.scalars(select(AuditEvent).where(AuditEvent.action == action)))

    def session_row(self, cookie_value: str) -> SSOSession:
        with self.sessions() as db:
            row = db.get(SSOSession, cookie_value.rpartition(".")[0])
            db.expunge(row)
            return row


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    instance = tmp_path_factory.mktemp("scan-login")
    initialised_copy(instance)
    added = run_hallmark(
        instance, "idp", "client", "add", "--json", "--name", "市民中心自助终端", "--client-id", "counter-kiosk", "--type", "public",
        "--grant", "urn:ietf:params:oauth:grant-type:device_code", "--scope", "openid profile",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    process, base = start_server(instance, log=instance / "server.log")
    engine = core_db.make_engine(f"sqlite:///{instance / 'hallmark.db'}")
    yield World(instance, base, core_db.make_session_factory(engine))
    stop_server(process)
    engine.dispose()


@pytest.fixture(scope="module")
def chromium():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@contextlib.contextmanager
def context(chromium, **options):
    made = chromium.new_context(**{"locale": "zh-CN", **options})
    made.set_default_timeout(20_000)
    try:
        yield made
    finally:
        made.close()


def axe_violations(page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now."""
    axe = pytest.importorskip("axe_playwright_python.sync_playwright", reason="pip install axe-playwright-python")
    found = axe.Axe().run(page).response["violations"]
    return [f"{v['id']}: {v['nodes'][0]['html'] if v['nodes'] else ''}" for v in found if v.get("impact") in ("serious", "critical")]


# --------------------------------------------------------------------------- over plain HTTP


def _csrf(text: str) -> str:
    return re.search(r'(?:name="csrf_token" value|data-csrf)="([^"]+)"', text).group(1)


def _desktop(world) -> tuple[requests.Session, str, str]:
    """A desktop browser (requests) that drew a QR code: (browser, its CSRF token, what the QR code holds)."""
    desktop = requests.Session()
    desktop.headers["User-Agent"] = WINDOWS
    page = desktop.get(world.base + "/login", timeout=10)
    token = _csrf(page.text)
    started = desktop.post(world.base + "/login/scan/start", data={"csrf_token": token, "next": "/account"}, timeout=10)
    assert started.status_code == 200, started.text
    assert started.json()["qr"].startswith("data:image/svg+xml;base64,")
    assert "hallmark_scan" in desktop.cookies
    return desktop, token, started.json()["url"]


def _poll(world, browser: requests.Session, token: str) -> dict:
    answer = browser.post(world.base + "/login/scan/poll", data={"csrf_token": token}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _answer(world, phone: requests.Session, url: str, decision: str) -> requests.Response:
    shown = phone.get(url, timeout=10)
    assert shown.status_code == 200, shown.text
    form = re.search(r'name="form_token" value="([^"]+)"', shown.text).group(1)
    return phone.post(url, data={"csrf_token": _csrf(shown.text), "form_token": form, "decision": decision}, timeout=10)


def test_a_photographed_code_does_not_sign_in_another_browser(world):
    desktop, token, url = _desktop(world)
    phone = world.signed_in(world.account(proofed=True))
    assert _poll(world, desktop, token)["status"] == "pending"
    confirmed = _answer(world, phone, url, "confirm")
    assert confirmed.status_code == 200 and "已确认" in confirmed.text

    # Someone who photographed the code polls from their own browser: no cookie of the desktop's, nothing to gain.
    thief = requests.Session()
    thief_token = _csrf(thief.get(world.base + "/login", timeout=10).text)
    assert _poll(world, thief, thief_token)["status"] == "unknown"
    assert sessions.COOKIE not in thief.cookies
    # nor may the thief's phone session answer it or open it
    other = world.signed_in(world.account(proofed=False))
    assert other.get(url, timeout=10).status_code == 410

    done = _poll(world, desktop, token)
    assert done == {"status": "done", "message": done["message"], "next": "/account"}
    cookie = desktop.cookies[sessions.COOKIE]
    assert "hallmark_scan" not in desktop.cookies
    assert desktop.get(world.base + "/account", allow_redirects=False, timeout=10).status_code == 200
    # used once: a second poll starts nothing more
    assert _poll(world, desktop, token)["status"] == "unknown"
    assert len(world.events("idp.scanlogin.completed")) >= 1
    row = world.session_row(cookie)
    assert row.acr == 2 and set(row.amr.split()) == {"pwd", "mca"}


def test_a_second_phone_session_and_a_second_answer_are_refused(world):
    desktop, token, url = _desktop(world)
    owner = world.signed_in(world.account(proofed=False))
    shown = owner.get(url, timeout=10)
    assert shown.status_code == 200
    assert _poll(world, desktop, token)["status"] == "scanned"

    intruder = world.signed_in(world.account(proofed=False))
    refused = intruder.get(url, timeout=10)
    assert refused.status_code == 403 and "另一部手机" in refused.text
    before = len(world.events("idp.scanlogin.refused"))

    assert _answer(world, owner, url, "confirm").status_code == 200
    form = re.search(r'name="form_token" value="([^"]+)"', shown.text).group(1)
    again = owner.post(url, data={"csrf_token": _csrf(shown.text), "form_token": form, "decision": "confirm"}, timeout=10)
    assert again.status_code == 410 and "已处理过" in again.text
    assert len(world.events("idp.scanlogin.refused")) == before + 1
    assert _poll(world, desktop, token)["status"] == "done"
    assert world.session_row(desktop.cookies[sessions.COOKIE]).acr == 1


def test_refused_and_expired_codes(world):
    desktop, token, url = _desktop(world)
    phone = world.signed_in(world.account(proofed=False))
    assert _answer(world, phone, url, "refuse").status_code == 200
    assert _poll(world, desktop, token)["status"] == "refused"
    assert sessions.COOKIE not in desktop.cookies
    assert len(world.events("idp.scanlogin.denied")) >= 1

    desktop, token, url = _desktop(world)
    with core_db.transaction(world.sessions) as db:
        db.execute(update(ScanLogin).where(ScanLogin.status == "pending").values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    late = phone.get(url, timeout=10)
    assert late.status_code == 410 and "已过期" in late.text
    assert _poll(world, desktop, token)["status"] == "expired"


def test_a_signed_out_phone_signs_in_first(world):
    _, _, url = _desktop(world)
    answer = requests.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/login?next=%2Fs%2F")


# --------------------------------------------------------------------------- in two browsers


def test_scan_to_login_in_two_browsers(world, chromium):
    SHOTS.mkdir(parents=True, exist_ok=True)
    account_id = world.account(proofed=True)
    phone_sid, phone_cookie = world.session_cookie(account_id, amr=("pwd", "hwk"))  # level 3: a USB-key login on the phone
    with (
        context(chromium, viewport={"width": 1280, "height": 900}, user_agent=WINDOWS) as desktop_context,
        context(chromium, user_agent=IPHONE, **PHONE) as phone_context,
    ):
        phone_context.add_cookies([{"name": sessions.COOKIE, "value": phone_cookie, "url": world.base}])
        desktop = desktop_context.new_page()
        with desktop.expect_response("**/login/scan/start") as started:
            desktop.goto(world.base + "/login?next=/account")
        url = started.value.json()["url"]
        qr = desktop.get_by_role("img", name="用手机扫码登录的二维码")
        qr.wait_for(state="visible")
        assert qr.get_attribute("src").startswith("data:image/svg+xml;base64,")
        assert desktop.get_by_role("heading", name="扫码登录").is_visible()
        assert axe_violations(desktop) == []
        desktop.screenshot(path=str(SHOTS / "scan-login-desktop.png"), full_page=True)

        phone = phone_context.new_page()
        phone.goto(url)
        assert phone.locator("h1").inner_text() == "在电脑上登录？"
        text = phone.locator("main").inner_text()
        assert "Windows 上的 Chrome" in text and "本机" in text and re.search(r"\d\d:\d\d", text)
        assert "实名" in text  # the level the computer will have: real-name, not the phone's certificate level
        assert axe_violations(phone) == []
        phone.screenshot(path=str(SHOTS / "scan-login-phone.png"), full_page=True)
        desktop.get_by_text("已扫描，请在手机上确认。").wait_for()
        phone.get_by_role("button", name="确认登录").click()
        assert phone.locator("h1").inner_text() == "已确认"

        desktop.wait_for_url(world.base + "/account")
        assert "实名" in desktop.locator("main").inner_text()
        desktop_cookie = next(c["value"] for c in desktop_context.cookies() if c["name"] == sessions.COOKIE)
        row = world.session_row(desktop_cookie)
        assert row.acr == 2 and "hwk" not in row.amr.split() and row.account_id == account_id and row.sid != phone_sid

        # the same code again from the phone (back and resubmit): refused with a clear page
        phone.go_back()
        phone.reload()
        assert phone.locator("h1").inner_text() == "此二维码无法使用"
        assert "已处理过" in phone.locator("main").inner_text()
        assert axe_violations(phone) == []

        # an expired code on the desktop: said so, and a new one on request
        other = desktop_context.new_page()
        desktop_context.clear_cookies()
        with other.expect_response("**/login/scan/start"):
            other.goto(world.base + "/login")
        with core_db.transaction(world.sessions) as db:
            db.execute(update(ScanLogin).where(ScanLogin.status == "pending").values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        other.get_by_text("二维码已过期。").wait_for()
        assert other.get_by_role("button", name="显示新的二维码").is_visible()
        with other.expect_response("**/login/scan/start"):
            other.get_by_role("button", name="显示新的二维码").click()
        other.get_by_role("img", name="用手机扫码登录的二维码").wait_for(state="visible")


def test_device_grant_from_a_kiosk_approved_in_a_browser(world, chromium):
    kiosk = {"client_id": "counter-kiosk"}
    codes = requests.post(world.base + "/oauth/device_authorization", data={**kiosk, "scope": "openid profile"}, timeout=10).json()
    grant = {**kiosk, "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": codes["device_code"]}
    assert requests.post(world.base + "/oauth/token", data=grant, timeout=10).json()["error"] == "authorization_pending"
    account_id = world.account(proofed=True)
    with context(chromium, user_agent=IPHONE, **PHONE) as phone_context:
        phone_context.add_cookies([{"name": sessions.COOKIE, "value": world.session_cookie(account_id)[1], "url": world.base}])
        page = phone_context.new_page()
        page.goto(world.base + "/device")
        assert page.locator("h1").inner_text() == "在自助终端或电视上登录"
        assert axe_violations(page) == []
        page.get_by_label("屏幕上的代码").fill("BBBB-BBBB")
        page.get_by_role("button", name="继续").click()
        assert "无法识别此代码" in page.get_by_role("alert").inner_text()
        assert axe_violations(page) == []
        page.screenshot(path=str(SHOTS / "device-unknown-code.png"), full_page=True)

        page.get_by_label("屏幕上的代码").fill(codes["user_code"].lower())
        page.get_by_role("button", name="继续").click()
        assert page.locator("h1").inner_text() == "登录 市民中心自助终端？"
        assert codes["user_code"] in page.locator("main").inner_text()
        assert axe_violations(page) == []
        page.screenshot(path=str(SHOTS / "device-confirm.png"), full_page=True)
        page.get_by_role("button", name="批准").click()
        assert page.locator("h1").inner_text() == "已批准"
        assert axe_violations(page) == []
    token = requests.post(world.base + "/oauth/token", data=grant, timeout=10)
    assert token.status_code == 200, token.text
    userinfo = requests.get(world.base + "/oauth/userinfo", headers={"Authorization": "Bearer " + token.json()["access_token"]}, timeout=10)
    assert userinfo.json()["sub"] == account_id and userinfo.json()["acr"] == "urn:hallmark:loa:2"
