"""索取 in a real browser on a phone-sized window (Debian's chromium via Playwright), checked with axe-core.

A real-name verified resident whose teacher's qualification is missing signs in
through the login page, opens "索取证照" in their section of /licences, fills the
form and sends it; the request shows in "我的索取" as 办理中. The education
department issues the licence for the request; the resident sees it among their
licences with the notice "您索取的证照已办结" until they press 知道了. Screenshots
go to ``/tmp/hallmark-shots/``.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from licenses import demo, issuance
from licenses import requests as licence_requests
from licenses.models import LicenceRequest
from tests.browser import CHROMIUM, SHOTS
from tests.licenses.conftest import ACTOR, person_code
from tests.licenses.test_pages import FULL_ID, add_person
from tests.licenses.test_pages_browser import PASSWORD, no_sideways_scrolling, phone, sign_in_through_the_login_page  # noqa: F401
from tests.platform.test_web_browser import axe_violations

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not found: apt-get install -y chromium fonts-noto-cjk"),
    pytest.mark.slow,
]
TEACHER = demo.TEACHER_QUALIFICATION


@pytest.fixture(scope="module")
def resident(licence_world):
    base = licence_world.serve()
    n = uuid.uuid4().hex[:8]
    code = person_code(60000 + int(n, 16) % 20000)
    username = f"asker{n}"
    account = add_person(licence_world, name="郑小梅", resident_id=code, username=username, password=PASSWORD)
    licence_world.issue(demo.DRIVING_LICENCE, holder_code=code, holder_name="郑小梅")
    return {"base": base, "code": code, "username": username, "account": account}


def test_asking_for_a_missing_licence_on_a_phone(licence_world, resident, phone):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = phone
    sign_in_through_the_login_page(page, resident, "/licences")
    section = page.locator("#holder-1")
    section.get_by_text("索取证照").click()
    form = section.locator("form#holder-1-ask")
    assert form.is_visible()
    form.get_by_label("证照类型").select_option(label="教师资格证书")
    form.get_by_label("发证机关").select_option(label="示范市教育局")
    form.get_by_label("用于办理的事项").fill("教师资格认定")
    form.get_by_label("索取理由（不超过200个字）").fill("应聘教师岗位，需要电子教师资格证书")
    form.get_by_label("公民身份号码（完整号码）").fill(resident["code"])
    assert no_sideways_scrolling(page)
    assert axe_violations(page) == []
    page.screenshot(path=str(SHOTS / "licence-request-form.png"), full_page=True)
    form.get_by_role("button", name="提交索取").click()
    page.wait_for_url("**/licences#my-requests")

    with licence_world.ctx.sessions() as db:
        row = db.scalars(select(LicenceRequest).where(LicenceRequest.requested_by == f"account:{resident['account']}")).one()
    item = page.locator(f'li.request[data-request="{row.id}"]')
    assert item.locator(".state").inner_text() == "办理中" and "示范市教育局" in item.inner_text()
    assert resident["code"] not in page.content() and not FULL_ID.search(page.content())
    assert no_sideways_scrolling(page)
    assert axe_violations(page) == []
    page.screenshot(path=str(SHOTS / "licence-request-open.png"), full_page=True)

    # The department issues the licence for the request.
    with licence_world.ctx.sessions() as db:
        assert row.id in [r.id for r in licence_requests.queue(db, demo.issuer_for(TEACHER).code, state="open")]
    face = demo.sample_face(TEACHER, holder_code=resident["code"], holder_name="郑小梅", seed=row.id)
    order = issuance.Order(type_code="", issuer_code="", holder_code="", face=face)
    # In a thread of its own: sealing runs an asyncio loop, and Playwright's sync API keeps one running in this thread.
    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(licence_requests.fulfil, licence_world.ctx, row.id, order=order, actor=ACTOR).result()

    page.reload()
    notice = page.locator(f'.notice[data-request="{row.id}"]')
    assert "您索取的证照已办结：教师资格证书" in notice.inner_text()
    assert page.locator(f'li.licence[data-identifier="{done.identifier}"] h3').inner_text() == "教师资格证书"
    assert page.locator(f'li.request[data-request="{row.id}"] .state').inner_text() == "已办结"
    assert no_sideways_scrolling(page)
    assert axe_violations(page) == []
    page.screenshot(path=str(SHOTS / "licence-request-fulfilled.png"), full_page=True)
    notice.get_by_role("button", name="知道了").click()
    page.wait_for_url("**/licences#my-requests")
    assert page.locator(f'.notice[data-request="{row.id}"]').count() == 0
    assert page.locator(f'li.request[data-request="{row.id}"]').get_attribute("data-state") == "fulfilled"
