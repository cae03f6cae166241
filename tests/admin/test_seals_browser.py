"""The seal keeper's section in a real browser (Debian's chromium, headless, 1280×800): a seal keeper proposes a new seal
with the keyboard, a second one approves, the keeper lets a client use it and retires it; every page is checked by
axe-core and for sideways scrolling. The keeper's USB-key confirmation is the real one (the certificate login of
tests/admin/conftest's Browser at the IdP); its console cookie is then handed to chromium.
Screenshots go to ``/tmp/hallmark-shots/admin-seal*.png``."""

from __future__ import annotations

import uuid

import pytest

from admin import critical, proposals, roles
from core.db import utc_now
from tests import browser
from tests.admin.conftest import department_code
from tests.admin.test_console_browser import DESKTOP, check, tab_to
from tests.browser import CHROMIUM

pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason=browser.MISSING), pytest.mark.slow]
DEPT_E = department_code(5)


@pytest.fixture
def desktop(tmp_path):
    with browser.page(tmp_path / "profile", timeout_ms=20_000, **DESKTOP) as page:
        yield page


def test_a_seal_keeper_proposes_grants_and_retires_a_seal_with_the_keyboard(console, desktop):
    from idp.oidc import clients
    from signing.models import Seal

    page = desktop
    keeper = console.person((roles.SEAL_KEEPER, DEPT_E), name="键盘印章")
    colleague = console.person((roles.SEAL_KEEPER, DEPT_E), usb=False, name="印章同事")
    client_id = f"browser-seal-{uuid.uuid4().hex[:6]}"
    with console.services.sessions() as db, db.begin():
        clients.add(console.services["idp"], db, name="浏览器审批系统", client_type="confidential", client_id=client_id,
                    grant_types=["client_credentials"], scopes=["sign:seal"], actor="test")  # fmt: skip
    signed_in = console.browser(keeper)
    assert signed_in.sign_in().status_code == 200
    assert signed_in.confirm_with_usb_key("/admin/seals").status_code == 200
    cookie = next(c for c in signed_in.http.cookies if c.name == "hallmark_admin")
    page.context.add_cookies([{"name": cookie.name, "value": cookie.value, "domain": "127.0.0.1", "path": "/admin",
                               "httpOnly": True, "sameSite": "Strict"}])  # fmt: skip

    page.goto(console.base + "/admin/seals")
    assert page.locator(f'section[data-department="{DEPT_E}"]').is_visible()
    check(page, "seals-keeper")

    # The proposal, with the keyboard: open the form, type, send.
    name = f"键盘测试局印章-{uuid.uuid4().hex[:4]}"
    tab_to(page, "el.tagName === 'SUMMARY'", limit=60)
    page.keyboard.press("Enter")
    tab_to(page, "el.id === 'department-1'")
    page.keyboard.type("键盘测试局")
    tab_to(page, "el.id === 'name-1'")
    page.keyboard.type(name)
    tab_to(page, "el.id === 'create-reason-1'")
    page.keyboard.type("新设业务专用章")
    tab_to(page, "el.tagName === 'BUTTON' && el.textContent.trim() === '提议印章'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/proposals/*?notice=proposed")
    check(page, "seal-proposed")
    pid = page.url.split("/admin/proposals/")[1].split("?")[0]

    second = critical.Signer(roles.Staff(colleague.account_id, "", frozenset({(roles.SEAL_KEEPER, DEPT_E)})), 3, utc_now())
    assert proposals.approve(console.admin, second, pid).status == proposals.DONE

    page.goto(console.base + "/admin/seals")
    row = page.locator(f'tr[data-seal="{name}"]')
    assert row.is_visible() and row.locator("[data-status]").inner_text() == "使用中"
    page.select_option("#client-1", client_id)
    page.get_by_role("button", name="授权").click()
    page.wait_for_url("**/admin/seals?notice=seal-granted")
    assert page.locator(f'tr[data-grant="{client_id}"]').is_visible()
    check(page, "seals-granted")

    page.get_by_role("link", name=f"停用 {name}…").click()
    page.wait_for_url("**/admin/seals/retire?seal=*")
    check(page, "seal-retire")
    page.get_by_label("理由（必填）").fill("部门撤并")
    page.get_by_label(f"我确认永久停用 {name}。").check()
    page.get_by_role("button", name="停用印章").click()
    page.wait_for_url("**/admin/seals?notice=seal-retired")
    assert page.locator(f'tr[data-seal="{name}"] [data-status]').inner_text() == "已停用"
    check(page, "seals-retired")
    with console.services.sessions() as db:
        assert db.get(Seal, name).status == "retired"
