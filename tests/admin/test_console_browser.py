"""The console in a real browser (Debian's chromium, headless, 1280×800): signing in on the identity provider's page,
every console page checked by axe-core, the navigation and a decision reached with the keyboard alone.
Screenshots go to ``/tmp/hallmark-shots/admin-*.png``."""

from __future__ import annotations

import pytest

from admin import proposals, roles
from core.db import utc_now
from licenses import demo
from tests import browser
from tests.admin.conftest import DEPT_A, PASSWORD
from tests.admin.test_four_eyes import seal_of
from tests.admin.test_supervision import data  # noqa: F401 - a fixture: licences, requests and logins to show
from tests.browser import CHROMIUM, SHOTS
from tests.platform.test_web_browser import axe_violations

pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason=browser.MISSING), pytest.mark.slow]
DESKTOP = {"viewport": {"width": 1280, "height": 800}}


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
    page.wait_for_url("**" + path)


def fits(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def check(page, name: str) -> None:
    assert axe_violations(page) == [], name
    assert fits(page), f"{name} scrolls sideways at 1280×800"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"admin-{name}.png"), full_page=True)


def test_a_seal_keeper_and_an_administrator_use_the_console_with_the_keyboard(console, desktop):
    page = desktop
    keeper = console.person((roles.SEAL_KEEPER, DEPT_A), (roles.SYSTEM_ADMIN, None), usb=False, name="林印章")
    colleague = console.person((roles.SEAL_KEEPER, DEPT_A), usb=False, name="陈同事")
    seal = seal_of(console, DEPT_A)
    fresh = proposals.Signer(roles.Staff(colleague.account_id, "", frozenset({(roles.SEAL_KEEPER, DEPT_A)})), 3, utc_now())
    waiting = proposals.propose(console.admin, fresh, "seal.rotate", {"seal": seal.name}, "年度密钥轮换")

    sign_in(page, console, keeper)
    assert page.locator("h1").inner_text() == "欢迎，林印章"
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    check(page, "home")

    # By keyboard: skip link, then the navigation; Enter on 审批 opens the approvals.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "跳到正文"
    for _ in range(15):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('href')") == "/admin/proposals":
            break
    else:
        pytest.fail("the approvals link cannot be reached with the Tab key")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/proposals")
    assert page.locator(f'tr[data-proposal="{waiting.id}"] .status').inner_text() == "等待批准"
    check(page, "proposals")

    page.goto(console.base + f"/admin/proposals/{waiting.id}")
    assert page.get_by_role("button", name="批准并执行").is_visible()
    check(page, "proposal")
    # Refusing by keyboard: the reason field, typed, then Enter on the button.
    page.get_by_label("理由（必填）").focus()
    page.keyboard.type("请先核对证书有效期")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "拒绝"
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/admin/proposals/{waiting.id}?notice=refused")
    assert page.locator("#status").inner_text() == "已拒绝"
    check(page, "proposal-refused")

    page.goto(console.base + "/admin/seals")
    assert page.locator(f'tr[data-seal="{seal.name}"]').is_visible()
    check(page, "seals")
    page.goto(console.base + "/admin/roles")
    assert page.get_by_role("button", name="授予").is_visible()
    check(page, "roles")

    page.goto(console.base + "/admin?lang=en")
    assert page.locator("h1").inner_text() == "Welcome, 林印章"
    check(page, "home-en")


def test_the_refusal_and_signed_out_pages(console, desktop):
    page = desktop
    clerk = console.person((roles.COUNTER_CLERK, DEPT_A), usb=False, name="王窗口")
    sign_in(page, console, clerk)
    response = page.goto(console.base + "/admin/roles")
    assert response.status == 403 and page.locator("h1").inner_text() == "无权操作"
    check(page, "forbidden")
    page.get_by_role("button", name="退出").click()
    page.wait_for_url("**/admin/signed-out")
    assert page.locator("h1").inner_text() == "您已退出控制台"
    check(page, "signed-out")


def tab_to(page, predicate: str, limit: int = 40) -> None:
    """Press Tab until ``predicate`` (JavaScript on document.activeElement, as ``el``) holds."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const el = document.activeElement; return !!({predicate}); }})()"):
            return
    pytest.fail(f"not reached with the Tab key: {predicate}")


def test_an_auditor_searches_verifies_and_reads_the_supervision_figures_with_the_keyboard(console, desktop, data):
    page = desktop
    auditor = console.person((roles.AUDITOR, None), usb=False, name="赵审计")
    sign_in(page, console, auditor)
    page.keyboard.press("Tab")  # the skip link
    tab_to(page, "el.getAttribute('href') === '/admin/audit'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/audit")
    tab_to(page, "el.id === 'action'")
    page.keyboard.type("idp.session")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/audit?*action=idp.session*")
    assert page.locator("tr[data-seq]").count() > 0
    assert all(a.startswith("idp.session") for a in page.locator("tr[data-seq] td:nth-child(4)").all_inner_texts())
    tab_to(page, "el.id === 'export-csv'")
    check(page, "audit")

    tab_to(page, "el.getAttribute('href') === '/admin/audit/verify'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/audit/verify")
    tab_to(page, "el.id === 'first'")
    tab_to(page, "el.tagName === 'BUTTON' && el.textContent.trim() === '校验'")
    page.keyboard.press("Enter")
    page.wait_for_selector('#outcome[data-state="ok"]')
    assert page.locator("#outcome-title").inner_text() == "哈希链完整"
    check(page, "audit-verify")

    page.goto(console.base + "/admin")
    page.keyboard.press("Tab")
    tab_to(page, "el.getAttribute('href') === '/admin/supervision'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/supervision")
    tab_to(page, "el.id === 'department'")
    page.select_option("#department", label=demo.issuer_for(demo.DRIVING_LICENCE).name)  # the keyboard picks an option the same way
    tab_to(page, "el.tagName === 'BUTTON' && el.textContent.trim() === '显示'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/supervision?*department=*")
    for figure in ("issued", "turnaround", "overdue", "logins", "failed"):
        chart = page.locator(f"#figure-{figure} svg[role='img']")
        assert chart.count() == 1 and chart.locator("title").count() == 1
        assert page.locator(f"#figure-{figure} table tbody tr").count() == 12
    check(page, "supervision")


def test_a_department_administrator_gives_a_role_in_their_department_with_the_keyboard(console, desktop):
    page = desktop
    head = console.person((roles.DEPARTMENT_ADMIN, DEPT_A), usb=False, name="周部门")
    newcomer = console.person(usb=False, name="吴新人")
    sign_in(page, console, head)
    page.keyboard.press("Tab")  # the skip link
    tab_to(page, "el.getAttribute('href') === '/admin/roles'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/roles")
    # Only their own department is offered, and no administrator role.
    assert page.locator("#department option").all_inner_texts() == [DEPT_A]
    assert "系统管理员" not in " ".join(page.locator("#role option").all_inner_texts())
    tab_to(page, "el.id === 'account'")
    page.keyboard.type(newcomer.username)
    page.select_option("#role", label="证照管理员")  # the keyboard picks an option the same way
    tab_to(page, "el.tagName === 'BUTTON' && el.textContent.trim() === '授予'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/roles?notice=granted")
    assert page.locator("tr[data-grant]", has_text="吴新人").count() == 1
    check(page, "roles-department")
    with console.services.sessions() as db:
        assert roles.staff(db, newcomer.account_id).may(roles.LICENCE_OFFICER, DEPT_A)
    # Another role's page: refused by the server, not just left out of the navigation.
    response = page.goto(console.base + "/admin/pki")
    assert response.status == 403 and page.locator("h1").inner_text() == "无权操作"


# One page each role may not open, reached by typing its address: the server answers 403.
FOREIGN = {
    roles.SYSTEM_ADMIN: "/admin/counter",
    roles.DEPARTMENT_ADMIN: "/admin/audit",
    roles.LICENCE_OFFICER: "/admin/seals",
    roles.COUNTER_CLERK: "/admin/licences",
    roles.CA_OFFICER: "/admin/roles",
    roles.SEAL_KEEPER: "/admin/pki",
    roles.AUDITOR: "/admin/clients",
}


def test_each_role_is_refused_another_roles_page_in_the_browser(console, desktop):
    page = desktop
    assert set(FOREIGN) == set(roles.ROLES)
    for role, path in FOREIGN.items():
        department = DEPT_A if role in roles.DEPARTMENT_ROLES else None
        person = console.person((role, department), usb=False, name="逐一试")
        sign_in(page, console, person)
        assert page.locator(f'nav a[href="{path}"]').count() == 0, f"{role} is shown a link to {path}"
        response = page.goto(console.base + path)
        assert response.status == 403, f"{role} was not refused {path}"
        assert page.locator("h1").inner_text() == "无权操作"
        page.get_by_role("button", name="退出").click()
        page.wait_for_url("**/admin/signed-out")


def test_the_remaining_refusal_pages(console, desktop):
    """The pages no role's main task reaches: a refused request, the CA's refusal, a failed sign-in and the
    sign-in asked again from the console's own page (its cookie held back from another site's link)."""
    page = desktop
    officer = console.person((roles.AUDITOR, None), (roles.CA_OFFICER, None), usb=False, name="孙拒绝")
    sign_in(page, console, officer)
    response = page.goto(console.base + "/admin/audit/export.xml")
    assert response.status == 404 and page.locator("h1").inner_text() == "未执行"
    check(page, "refused")

    page.goto(console.base + "/admin/pki/issue")
    page.locator("#name").fill("拒绝测试")
    page.locator("#csr").fill("-----BEGIN CERTIFICATE REQUEST-----\nnot a request\n-----END CERTIFICATE REQUEST-----")
    with page.expect_navigation() as navigation:
        page.locator("form button[type=submit]").last.click()
    assert 400 <= navigation.value.status < 500 and page.get_by_role("alert").count() >= 1
    check(page, "pki-issue-refused")
    response = page.goto(console.base + "/admin/pki/certificates/zz-not-a-serial")
    assert 400 <= response.status < 500 and page.locator("h1").inner_text() == "未执行"
    check(page, "pki-refused")

    response = page.goto(console.base + "/admin/callback?state=forged&code=forged")
    assert 400 <= response.status < 500
    check(page, "login-failed")

    page.context.clear_cookies()
    response = page.goto(console.base + "/admin/callback?state=forged&code=forged")
    assert response.status == 200 and page.get_by_role("link").filter(has_text="继续登录").count() == 1
    check(page, "again")
