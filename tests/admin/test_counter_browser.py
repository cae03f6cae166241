"""The counter desk in a real browser (Debian's chromium, headless, 1280×800, a fake camera): a counter clerk, with
the keyboard alone, searches with a reason, starts the camera and takes the photo (``getUserMedia``, chromium's
test pattern), records the in-person verification and resets the password. Every page is checked by axe-core (no
serious or critical violation) and for sideways scrolling. Screenshots go to ``/tmp/hallmark-shots/admin-*.png``."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import select

from admin.models import CounterVisit
from core.models import AuditEvent
from tests import browser
from tests.admin.conftest import DEPT_A
from tests.admin.test_console_browser import DESKTOP, check, sign_in, tab_to
from tests.admin.test_counter_console import NEW_PASSWORD, clerk_of
from tests.browser import CHROMIUM

pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason=browser.MISSING), pytest.mark.slow]


@pytest.fixture
def camera_desktop(tmp_path):
    with browser.page(tmp_path / "profile", timeout_ms=20_000, args=browser.FAKE_CAMERA, **DESKTOP) as page:
        page.context.grant_permissions(["camera"])
        yield page


def test_a_counter_clerk_searches_photographs_verifies_and_resets_with_the_keyboard(console, camera_desktop):
    page = camera_desktop
    clerk = clerk_of(console, DEPT_A)
    resident = console.person(usb=False, name="孙窗口")
    sign_in(page, console, clerk)

    tab_to(page, "el.getAttribute('href') === '/admin/counter'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/counter")
    check(page, "counter")
    tab_to(page, "el.id === 'resident_id'")
    page.keyboard.type(resident.resident_id)
    tab_to(page, "el.id === 'reason'")
    page.keyboard.type("本人申请重置密码")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/counter/visits/*")
    assert page.locator("#masked-id").inner_text() != resident.resident_id
    assert resident.resident_id not in page.content()
    check(page, "counter-person")

    tab_to(page, "el.id === 'v-name'")
    page.keyboard.type("孙窗口")
    tab_to(page, "el.id === 'v-rid'")
    page.keyboard.type(resident.resident_id)
    tab_to(page, "el.id === 'doc-resident-card'")
    page.keyboard.press("Space")
    tab_to(page, "el.id === 'v-location'")
    page.keyboard.type("测试市民服务中心")
    tab_to(page, "el.id === 'camera-start'")
    page.keyboard.press("Enter")
    page.wait_for_selector("#camera-take:not([hidden])")
    for _ in range(100):  # the fake camera's first frame (wait_for_function would need eval, which the CSP forbids)
        if page.evaluate("document.getElementById('camera-video').videoWidth") > 0:
            break
        page.wait_for_timeout(100)
    assert page.evaluate("document.activeElement.id") == "camera-take"
    page.keyboard.press("Enter")
    page.wait_for_selector("#camera-shot:not([hidden])")
    assert page.evaluate("document.getElementById('photo').files.length") == 1
    assert page.evaluate("document.activeElement.id") == "verify-submit"
    check(page, "counter-photo")
    page.keyboard.press("Enter")
    page.wait_for_url("**notice=verified")
    assert page.locator("#verified").inner_text().startswith("是")
    check(page, "counter-verified")

    visit_id = page.url.split("/visits/")[1].split("?")[0]
    with console.services.sessions() as db:
        visit = db.get(CounterVisit, visit_id)
        assert visit.photo_type == "image/jpeg" and visit.photo_sealed and visit.photo_sha256
        event = db.scalars(
            select(AuditEvent).where(AuditEvent.action == "admin.counter.verified", AuditEvent.target == resident.account_id)
        ).one()
        assert json.loads(event.details)["photo_sha256"] == visit.photo_sha256
    photo = page.request.get(console.base + f"/admin/counter/visits/{visit_id}/photo")
    assert photo.ok and photo.body()[:3] == b"\xff\xd8\xff" and hashlib.sha256(photo.body()).hexdigest() == visit.photo_sha256

    tab_to(page, "el.id === 'new-password'")
    page.keyboard.type(NEW_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**notice=reset")
    check(page, "counter-reset")
    with console.services.sessions() as db:
        assert db.scalars(
            select(AuditEvent).where(AuditEvent.action == "admin.counter.password_reset", AuditEvent.target == resident.account_id)
        ).one()
