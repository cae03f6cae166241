"""The licence pages in a real browser (Debian's chromium via Playwright) on a phone-sized window, checked with axe-core.

A real-name verified resident signs in through the identity provider's login page,
sees their licences, shows one (亮证): the QR code on the screen is read back from a
screenshot by zxing-cpp, and what it decodes to is checked offline with the
published key and opened as a phone camera would open it; the countdown ends in
"二维码已过期" (Playwright's clock, not waiting). Who looked lists an access with
its receipt, which the receipt page confirms. The verification page says valid,
then, after revocation, a red 已吊销. Screenshots go to ``/tmp/hallmark-shots/``.
"""

from __future__ import annotations

import io
import uuid

import pytest

from core import db as core_db
from core.identifiers import lookup_hash, mask_resident_id
from licenses import accesslog, demo, lifecycle, qrpayload, receipts, signer
from tests import browser
from tests.browser import CHROMIUM, SHOTS
from tests.licenses.conftest import ACTOR, person_code
from tests.licenses.test_pages import FULL_ID, add_person
from tests.platform.test_web_browser import axe_violations

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not found: apt-get install -y chromium fonts-noto-cjk"),
    pytest.mark.slow,
]
PASSWORD = "Correct horse 42"


@pytest.fixture
def phone(tmp_path):
    with browser.page(tmp_path / "profile", timeout_ms=20_000, user_agent=browser.IPHONE, **browser.PHONE) as page:
        yield page


@pytest.fixture(scope="module")
def resident(licence_world):
    """A real-name verified resident with a driving licence and a teacher's qualification, and the site."""
    base = licence_world.serve()
    n = uuid.uuid4().hex[:8]
    code = person_code(20000 + int(n, 16) % 20000)
    username = f"resident{n}"
    add_person(licence_world, name="林晓红", resident_id=code, username=username, password=PASSWORD)
    driving = licence_world.issue(demo.DRIVING_LICENCE, holder_code=code, holder_name="林晓红")
    teacher = licence_world.issue(demo.TEACHER_QUALIFICATION, holder_code=code, holder_name="林晓红")
    return {"base": base, "code": code, "username": username, "driving": driving.identifier, "teacher": teacher.identifier}


def sign_in_through_the_login_page(page, resident, path: str) -> None:
    page.goto(resident["base"] + path)
    page.wait_for_url("**/login?next=**")
    page.get_by_label("手机号码或用户名").fill(resident["username"])
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录", exact=True).click()
    page.wait_for_url("**" + path)


def no_sideways_scrolling(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_my_licences_and_showing_one_at_a_counter(licence_world, resident, phone):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = phone
    sign_in_through_the_login_page(page, resident, "/licences")
    assert page.locator("h1").inner_text() == "我的证照"
    mine = page.locator(f'li.licence[data-identifier="{resident["driving"]}"]')
    assert mine.locator("h3").inner_text() == "机动车驾驶证"
    assert mine.locator(".state").inner_text() == "有效"
    assert "示范市公安局交通警察支队" in mine.inner_text() and mask_resident_id(resident["code"]) in mine.inner_text()
    assert page.locator(f'li.licence[data-identifier="{resident["teacher"]}"] h3').inner_text() == "教师资格证书"
    assert resident["code"] not in page.content() and not FULL_ID.search(page.content())
    assert no_sideways_scrolling(page)
    assert axe_violations(page) == []
    page.screenshot(path=str(SHOTS / "licences.png"), full_page=True)

    # 亮证 by keyboard: Tab to the driving licence's "show" link, Enter follows it.
    page.clock.install()
    show = mine.get_by_role("link", name="出示机动车驾驶证")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('href')") == show.get_attribute("href"):
            break
    else:
        pytest.fail("the show link cannot be reached with the Tab key")
    page.keyboard.press("Enter")
    page.wait_for_url("**/licences/show/**")
    assert page.locator("h1").inner_text() == "亮证"
    qr = page.locator("#qr svg")
    assert qr.is_visible() and qr.get_attribute("aria-label") == "机动车驾驶证的二维码"
    assert page.locator("#qr-left").inner_text() == "3:00"
    assert axe_violations(page) == []
    page.screenshot(path=str(SHOTS / "licence-show.png"), full_page=True)

    # What a counter's scanner reads off the screen: an independent decoder, then the signature offline.
    import zxingcpp
    from joserfc import jws
    from joserfc.jwk import KeySet
    from PIL import Image

    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(page.locator("#qr").screenshot())))
    # one code on the element; zxing may report it twice (two finder-pattern hypotheses), never two different texts
    assert found and {(f.format, f.text) for f in found} == {(zxingcpp.BarcodeFormat.QRCode, found[0].text)}
    scanned = found[0].text
    assert scanned.startswith(resident["base"] + "/licences/v#")
    token = qrpayload.token_of(scanned)
    verified = jws.deserialize_compact(token, KeySet.import_key_set(signer.jwks(licence_world.ctx)))
    assert verified.headers()["typ"] == qrpayload.TYP
    claims = qrpayload.read(licence_world.ctx, scanned)
    assert claims["identifier"] == resident["driving"] and claims["kind"] == "show"
    assert claims["holder_masked"] == mask_resident_id(resident["code"])
    assert claims["holder_name"] == "**红", "the code shown to a counter names the person masked"

    # Three minutes later (the page's clock): the code is gone and the page says so.
    page.clock.fast_forward("03:01")
    page.wait_for_selector("#qr-expired:not([hidden])")
    assert "二维码已过期" in page.locator("#qr-expired").inner_text()
    assert page.locator("#qr-live").is_hidden()
    assert page.evaluate("document.activeElement.id") == "qr-refresh"
    assert axe_violations(page) == []
    page.screenshot(path=str(SHOTS / "licence-show-expired.png"), full_page=True)
    page.keyboard.press("Enter")
    page.wait_for_selector("#qr svg")
    assert page.locator("#qr-live").is_visible()

    # A phone camera opens the scanned URL: the page's script posts the fragment and shows the check.
    page.goto(scanned)
    page.wait_for_selector("#payload")
    assert page.locator("#payload").get_attribute("data-kind") == "show"
    assert "二维码真实" in page.locator("#payload").inner_text()
    assert page.locator("#verdict").get_attribute("data-state") == "valid"
    assert "#" not in page.url, "the payload does not stay in the address bar"
    assert axe_violations(page) == []
    page.screenshot(path=str(SHOTS / "licence-qr-checked.png"), full_page=True)


def test_who_looked_and_checking_a_receipt(licence_world, resident, phone):
    ctx = licence_world.ctx
    with core_db.transaction(ctx.sessions) as db:
        entry = accesslog.append(
            db,
            client_id="county-hall",
            holder_hash=lookup_hash(ctx.lookup_key, "resident_id", resident["code"]),
            identifier=resident["teacher"],
            type_code=demo.TEACHER_QUALIFICATION,
            route="consent",
            mode="read",
            purpose="教师招聘资格审核",
            matter="MATTER-EDU-7",
            fields=["qualification", "subject"],
            result="ok",
        )
    receipt = receipts.issue(ctx, entry)
    page = phone
    sign_in_through_the_login_page(page, resident, "/licences/access")
    assert page.locator("h1").inner_text() == "谁查看了我的证照"
    shown = page.locator(f'li.entry[data-seq="{entry.seq}"]')
    body = shown.inner_text()
    assert "county-hall" in body and "教师招聘资格审核" in body and "MATTER-EDU-7" in body
    assert "查看了证照内容" in body and "经您授权" in body and "教师资格证书" in body and entry.hash in body
    assert no_sideways_scrolling(page)
    assert axe_violations(page) == []
    page.screenshot(path=str(SHOTS / "licences-access.png"), full_page=True)

    shown.get_by_role("link", name=f"核验第 {entry.seq} 条记录的回执").click()
    page.wait_for_url("**/licences/receipts/check?entry=**")
    assert page.locator("#entry").inner_text() == entry.hash
    page.get_by_label("回执", exact=True).fill(receipt)
    page.get_by_role("button", name="核验").click()
    page.wait_for_selector("#outcome")
    assert page.locator("#outcome").get_attribute("data-outcome") == "ok"
    assert f"第 {entry.seq} 条" in page.locator("#outcome").inner_text()
    assert axe_violations(page) == []
    page.screenshot(path=str(SHOTS / "licences-receipt.png"), full_page=True)


@pytest.fixture(scope="module")
def business_licence(licence_world):
    """Issued before the browser opens: sealing runs its own event loop, which Playwright's would be in the way of."""
    return licence_world.issue(demo.BUSINESS_LICENCE, holder_name="示范茶业有限公司")


def test_the_verification_page_valid_then_revoked(licence_world, business_licence, phone):
    base = licence_world.serve()
    licence = business_licence
    page = phone
    page.goto(f"{base}/licences/verify/{licence.identifier}")
    assert page.locator("h1").inner_text() == "核验证照"
    assert page.locator("#verdict").get_attribute("data-state") == "valid"
    assert page.locator("#verdict .word").inner_text() == "有效"
    assert page.locator("#type").inner_text() == "营业执照" and page.locator("#issuer").inner_text() == "示范市市场监督管理局"
    assert licence.holder_masked in page.locator("#holder").inner_text() and page.locator("#version").inner_text().startswith("001")
    assert no_sideways_scrolling(page)
    assert axe_violations(page) == []
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "licence-verify.png"), full_page=True)

    with core_db.transaction(licence_world.ctx.sessions) as db:
        lifecycle.change_state(db, licence.identifier, "revoke", reason="虚假登记", actor=ACTOR)
    response = page.reload()
    assert response.status == 200, "revoked is a fact about the licence, not an error"
    verdict = page.locator("#verdict")
    assert verdict.get_attribute("data-state") == "revoked" and "bad" in verdict.get_attribute("class")
    assert page.locator("#verdict .word").inner_text() == "已吊销"
    assert page.evaluate("getComputedStyle(document.querySelector('#verdict')).color") == "rgb(179, 38, 30)"  # --red
    assert axe_violations(page) == []
    page.screenshot(path=str(SHOTS / "licence-verify-revoked.png"), full_page=True)

    wrong = licence.identifier[:-1] + ("A" if licence.identifier[-1] != "A" else "B")
    response = page.goto(f"{base}/licences/verify/{wrong}")
    assert response.status == 422
    assert "这不是有效的证照标识" in page.get_by_role("alert").inner_text()
    assert axe_violations(page) == []
    page.screenshot(path=str(SHOTS / "licence-verify-bad-id.png"), full_page=True)


def test_the_other_public_pages_are_clean(licence_world, phone):
    base = licence_world.serve()
    page = phone
    for path, heading in (
        ("/licences/verify", "核验证照"),
        ("/licences/v", "扫码核验证照"),
        ("/licences/grants", "常设授权"),
        ("/licences/receipts/check", "核验使用回执"),
    ):
        response = page.goto(base + path)
        assert response.status == 200 and page.locator("h1").inner_text() == heading, path
        assert no_sideways_scrolling(page), path
        assert axe_violations(page) == [], path
        page.screenshot(path=str(SHOTS / f"licences-{path.strip('/').replace('/', '-')}.png"), full_page=True)
    # The landing page leads to the holder's page and the verification page.
    page.goto(base + "/")
    assert page.locator('main a[href="/licences"]').is_visible() and page.locator('main a[href="/licences/verify"]').is_visible()
