"""A real browser (Debian's chromium, headless, driven by Playwright) on the IdP's pages at a phone's size.

Needs ``apt-get install chromium fonts-noto-cjk`` and ``pip install playwright``
(Playwright's own browser downloads are not used). Screenshots are written to
``/tmp/hallmark-shots/`` (or ``HALLMARK_SHOTS``) for people to look at.
"""

from __future__ import annotations

import csv

import pytest

from tests import browser
from tests.browser import CHROMIUM, SHOTS
from tests.conftest import initialised_copy, run_hallmark, start_server, stop_server
from tests.idp.test_sms_browser import send_and_read_code

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not found: apt-get install -y chromium fonts-noto-cjk"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    instance = tmp_path_factory.mktemp("browser")
    initialised_copy(instance)
    out = instance / "people.csv"
    assert run_hallmark(instance, "idp", "registry", "demo", "--count", "5", "--out", str(out)).returncode == 0
    with out.open(encoding="utf-8") as handle:
        people = list(csv.DictReader(handle))
    process, base = start_server(instance)
    yield base, people
    stop_server(process)


@pytest.fixture
def phone(tmp_path):
    with browser.page(tmp_path / "profile", timeout_ms=15_000, user_agent=browser.IPHONE, **browser.PHONE) as page:
        yield page


def test_register_login_and_account_page_on_a_phone(site, phone):
    base, people = site
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = phone

    page.goto(base + "/register")
    assert page.locator("h1").inner_text() == "注册账号"
    page.get_by_label("手机号码或用户名").fill("13612345678")
    code = send_and_read_code(page, base, "13612345678")  # a mobile number registers with the code texted to it
    page.get_by_label("短信验证码").fill(code)
    page.get_by_label("显示名称（选填）").fill("李小红")
    page.get_by_label("密码", exact=True).fill("Correct horse 42")
    page.get_by_label("再次输入密码").fill("Correct horse 42")
    page.get_by_label("我已阅读并同意隐私政策").check()
    page.screenshot(path=str(SHOTS / "register.png"), full_page=True)
    page.get_by_role("button", name="注册").click()
    page.wait_for_url("**/account?notice=welcome")
    assert page.locator("h1").inner_text() == "李小红"
    assert page.get_by_text("账号注册成功").is_visible()

    page.get_by_role("button", name="在此浏览器上退出登录").click()
    page.wait_for_url("**/logout/done?ticket=**")
    assert page.locator("h1").inner_text() == "您已退出登录"
    page.get_by_role("link", name="重新登录").click()
    page.wait_for_url("**/login")
    page.get_by_label("手机号码或用户名").fill("13612345678")
    page.screenshot(path=str(SHOTS / "login.png"), full_page=True)
    page.get_by_label("密码").fill("Wrong horse 42")
    page.get_by_role("button", name="登录", exact=True).click()
    assert page.get_by_role("alert").inner_text() == "手机号码/用户名或密码错误。"
    page.screenshot(path=str(SHOTS / "login-error.png"), full_page=True)
    page.get_by_label("密码").fill("Correct horse 42")
    page.get_by_role("button", name="登录", exact=True).click()
    page.wait_for_url("**/account")

    page.get_by_role("link", name="进行实名认证").click()
    person = people[0]
    page.get_by_label("姓名").fill(person["name"])
    page.get_by_label("公民身份号码").fill(person["resident_id"])
    page.screenshot(path=str(SHOTS / "verify.png"), full_page=True)
    page.get_by_role("button", name="认证").click()
    page.wait_for_url("**/account?notice=verified")

    body = page.locator("main").inner_text()
    assert "实名认证成功" in body and "已认证" in body and "当前浏览器" in body and "iPhone 上的 Safari" in body
    masked = person["resident_id"][:3] + "*" * 11 + person["resident_id"][-4:]
    assert masked in body and person["resident_id"] not in page.content()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways on a phone"
    page.screenshot(path=str(SHOTS / "account.png"), full_page=True)

    page.get_by_role("link", name="English").click()
    assert page.locator("main h2").first.inner_text() == "Real-name status"
    page.screenshot(path=str(SHOTS / "account-en.png"), full_page=True)

    page.goto(base + "/login/step-up?next=/account&level=3")
    assert "USB" in page.locator("main").inner_text()
    page.screenshot(path=str(SHOTS / "step-up-certificate.png"), full_page=True)
