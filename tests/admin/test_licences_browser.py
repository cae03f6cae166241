"""The licence and client sections in a real browser (Debian's chromium, headless, 1280×800): a licence officer issues
a licence from the generated form with the keyboard alone (a missing field first, its message next to it), and every
new page is checked by axe-core (no serious or critical violation) and for sideways scrolling.
Screenshots go to ``/tmp/hallmark-shots/admin-*.png``."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest

from admin import roles
from idp import levels
from licenses import demo, lifecycle
from licenses import requests as licence_requests
from licenses.models import LicenceRequest
from tests import browser
from tests.admin.conftest import PASSWORD
from tests.admin.test_console_browser import DESKTOP, check, tab_to
from tests.browser import CHROMIUM
from tests.licenses.conftest import person_code

pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason=browser.MISSING), pytest.mark.slow]
DRIVING = demo.DRIVING_LICENCE
POLICE = demo.issuer_for(DRIVING).code
ACTOR = "test:licences-browser"


@pytest.fixture
def desktop(tmp_path):
    with browser.page(tmp_path / "profile", timeout_ms=20_000, **DESKTOP) as page:
        yield page


def sign_in(page, console, person, path: str = "/admin") -> None:
    page.goto(console.base + path)
    page.wait_for_url("**/login?next=**")
    page.get_by_label("手机号码或用户名").fill(person.username)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录", exact=True).click()
    page.wait_for_load_state()
    if "/account/privacy/accept" in page.url:  # the IdP asks a newly signed-in person to accept its privacy notice
        page.locator('input[name="accept"]').check()
        page.locator('form[action="/account/privacy/accept"] button[type="submit"]').click()
    page.wait_for_url("**" + path)


def test_a_licence_officer_issues_with_the_keyboard_and_the_new_pages_pass_axe(console, desktop):
    page = desktop
    ctx = console.services["licenses"]
    demo.prepare_catalogue(ctx, actor=ACTOR)
    officer = console.person((roles.LICENCE_OFFICER, POLICE), usb=False, name="键盘证照")
    holder = person_code(900_000 + secrets.randbelow(10_000))
    sign_in(page, console, officer)

    # By keyboard: the navigation's licences link, then the issuing form of the driving licence.
    page.keyboard.press("Tab")
    tab_to(page, "el.getAttribute('href') === '/admin/licences'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/licences")
    check(page, "licences")
    page.goto(console.base + f"/admin/licences/issue?type={DRIVING}")
    assert page.get_by_label("准驾车型").is_visible()
    check(page, "licence-issue")

    face = demo.sample_face(DRIVING, holder_code=holder, holder_name="林键盘")
    tab_to(page, "el.id === 'f-holder_code'")
    page.keyboard.type(holder)
    for name in ("licence_number", "name", "nationality", "address", "birth_date", "first_issued_on"):
        tab_to(page, f"el.id === 'f-{name}'")
        if name in ("birth_date", "first_issued_on"):
            page.fill(f"#f-{name}", face[name])  # a date input takes its value as the keyboard's date picker gives it
        else:
            page.keyboard.type(face[name])
    page.select_option("#f-sex", face["sex"])
    # vehicle_class left empty: refused, the message next to the field, focusable fields kept.
    tab_to(page, "el.tagName === 'BUTTON' && el.textContent.trim() === '签发'")
    page.keyboard.press("Enter")
    page.wait_for_selector("#e-vehicle_class")
    assert page.locator("#e-vehicle_class").inner_text() == "此项必填。"
    assert page.locator("#f-name").input_value() == "林键盘"
    check(page, "licence-issue-refused")
    tab_to(page, "el.id === 'f-vehicle_class'")
    page.keyboard.type("C1")
    tab_to(page, "el.tagName === 'BUTTON' && el.textContent.trim() === '签发'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/licences/l/*?notice=issued")
    assert page.locator("#state").inner_text() == "有效"
    check(page, "licence")

    asked = licence_requests.ask(
        ctx, type_code=DRIVING, issuer_code=POLICE, holder_type="111", holder_code=person_code(910_000 + secrets.randbelow(10_000)),
        matter="机动车驾驶证补领", reason="证照库中没有", requested_by="client:test",
    )  # fmt: skip
    with console.services.sessions() as db, db.begin():
        db.get(LicenceRequest, asked.id).deadline = lifecycle.today() - timedelta(days=2)
    page.goto(console.base + "/admin/licences/requests")
    assert page.locator(f'tr[data-request="{asked.id}"].overdue').is_visible()
    check(page, "licence-requests")
    page.goto(console.base + f"/admin/licences/requests/{asked.id}")
    check(page, "licence-request")
    page.goto(console.base + "/admin/licences/imports")
    check(page, "licence-imports")


def test_the_client_and_matter_pages_pass_axe(console, desktop):
    page = desktop
    demo.prepare_catalogue(console.services["licenses"], actor=ACTOR)
    with console.services.sessions() as db, db.begin():
        levels.set_matter(db, "browser-matter", level=2, name="浏览器测试事项", department="测试局", actor=ACTOR)
    admin = console.person((roles.SYSTEM_ADMIN, None), usb=False, name="键盘系统")
    sign_in(page, console, admin)
    page.keyboard.press("Tab")
    tab_to(page, "el.getAttribute('href') === '/admin/clients'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/clients")
    check(page, "clients")
    page.get_by_label("系统名称").fill("浏览器测试大厅")
    page.get_by_label("重定向 URI（每行一个，https）").fill("https://browser-hall.example.cn/callback")
    page.get_by_role("button", name="注册").click()
    page.wait_for_selector("#secret")
    check(page, "client")
    page.goto(console.base + "/admin/matters")
    assert page.locator('tr[data-matter="browser-matter"]').is_visible()
    check(page, "matters")
