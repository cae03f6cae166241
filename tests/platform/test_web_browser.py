"""The landing page, the error pages and 413 in a real browser (Debian's chromium via Playwright), checked with axe-core.

Runs against ``hallmark serve`` with a small request limit, so an upload can be too
large. Screenshots go to ``/tmp/hallmark-shots/`` (or ``HALLMARK_SHOTS``).
"""

from __future__ import annotations

import pytest
import requests

from tests.browser import CHROMIUM, SHOTS
from tests.conftest import initialised_copy, start_server, stop_server
from tests.idp.test_idp_pages_browser import phone  # noqa: F401 - fixture

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not found: apt-get install -y chromium fonts-noto-cjk"),
    pytest.mark.slow,
]

LIMIT = 256 * 1024  # HALLMARK_MAX_REQUEST_BYTES of this server
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    instance = tmp_path_factory.mktemp("web-browser")
    initialised_copy(instance)
    process, base = start_server(instance, workers=1, HALLMARK_MAX_REQUEST_BYTES=str(LIMIT))
    yield base
    stop_server(process)


def axe_violations(page) -> list[str]:
    """axe-core's violations on the page as it is now (rule id and the first offending element)."""
    axe = pytest.importorskip("axe_playwright_python.sync_playwright", reason="pip install axe-playwright-python")
    found = axe.Axe().run(page).response["violations"]
    return [f"{v['id']}: {v['nodes'][0]['html'] if v['nodes'] else ''}" for v in found]


def test_the_landing_page_on_a_phone(site, phone):
    page = phone
    response = page.goto(site + "/")
    assert response.status == 200 and response.headers["content-type"].startswith("text/html")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert page.locator("h1").inner_text() == "网上办事大厅统一身份认证"
    for name, href in (
        ("登录", "/login"),
        ("注册", "/register"),
        ("验证文件", "/verify"),
        ("验证已签名的 PDF", "/validate"),
        ("网上办事大厅接入指南", "/developers"),
    ):
        link = page.locator(f'main a[href="{href}"]')
        assert link.is_visible() and name in link.inner_text(), href
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "nothing scrolls sideways on a phone"
    assert axe_violations(page) == []
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "landing.png"), full_page=True)

    # By keyboard: the skip link first, then on to "sign in", and Enter follows it.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "跳到正文"
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('href')") == "/login":
            break
    else:
        pytest.fail("the sign-in link cannot be reached with the Tab key")
    page.keyboard.press("Enter")
    page.wait_for_url("**/login")
    assert page.locator("h1").inner_text() == "登录"

    # The public pages it leads to, in the shared layout, are as clean.
    for path, heading in (
        ("/developers", "网上办事大厅接入指南"),
        ("/developers/api", "接口参考"),
        ("/verify", "验证文件"),
        ("/validate", "验证已签名的 PDF"),
        ("/login", "登录"),
        ("/register", "注册账号"),
    ):
        page.goto(site + path)
        assert page.locator("h1").inner_text() == heading, path
        assert axe_violations(page) == [], path
        page.screenshot(path=str(SHOTS / f"{path.strip('/')}.png"), full_page=True)

    page.goto(site + "/")
    page.get_by_role("link", name="English").click()
    page.wait_for_url("**/?lang=en")
    assert page.locator("h1").inner_text() == "Online Service Hall Unified Identity"
    assert page.locator("html").get_attribute("lang") == "en"


def test_an_unknown_path_is_a_404_page_with_a_way_home(site, phone):
    page = phone
    response = page.goto(site + "/no/such/page")
    assert response.status == 404
    assert page.locator("h1").inner_text() == "页面不存在"
    assert "请检查网址" in page.get_by_role("alert").inner_text()
    assert axe_violations(page) == []
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "not-found.png"), full_page=True)
    page.get_by_role("link", name="返回首页").click()
    page.wait_for_url(site + "/")
    assert page.locator("h1").inner_text() == "网上办事大厅统一身份认证"


def test_an_unknown_path_is_problem_json_for_an_api_client(site):
    response = requests.get(site + "/no/such/page", headers={"Accept": "application/json"}, timeout=15)
    assert response.status_code == 404 and response.headers["Content-Type"] == PROBLEM
    assert response.json()["status"] == 404 and response.json()["title"] == "Not Found"
    # Under a JSON API a browser's Accept header does not make a page.
    api = requests.get(site + "/api/ca/no-such", headers={"Accept": "text/html,*/*;q=0.8"}, timeout=15)
    assert api.status_code == 404 and api.headers["Content-Type"] == PROBLEM


def test_an_oversize_upload_is_a_413_page_in_a_browser_and_problem_json_for_an_api(site, phone):
    page = phone
    page.goto(site + "/validate")
    too_big = b"%PDF-1.7\n" + b"0" * (LIMIT + 1024)
    page.set_input_files("input[type=file]", files=[{"name": "big.pdf", "mimeType": "application/pdf", "buffer": too_big}])
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="验证").click()
    assert navigation.value.status == 413
    assert page.locator("h1").inner_text() == "内容过大"
    assert "提交的内容过大" in page.get_by_role("alert").inner_text()
    assert axe_violations(page) == []
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "too-large.png"), full_page=True)

    api = requests.post(
        site + "/api/validate",
        data=too_big,
        headers={"Content-Type": "application/pdf", "Accept": "application/json"},
        timeout=30,
    )
    assert api.status_code == 413 and api.headers["Content-Type"] == PROBLEM
    assert api.json()["title"] == "Content Too Large" and str(LIMIT) in api.json()["detail"]
