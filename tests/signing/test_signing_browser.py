"""The verification page in a real browser (Debian's chromium via Playwright), as a phone that scanned the QR code."""

from __future__ import annotations

import pytest
import requests

from tests import browser
from tests.browser import CHROMIUM, SHOTS
from tests.signing_fixtures import DEPARTMENT, DEPARTMENT_CODE, make_pdf, signing_world, tamper  # noqa: F401 - fixture

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not found: apt-get install -y chromium fonts-noto-cjk"),
    pytest.mark.slow,
]


@pytest.fixture
def phone(tmp_path):
    with browser.page(tmp_path / "profile", **browser.PHONE) as page:
        yield page


def _stamp_encodes(pdf: bytes, url: str) -> bool:
    """The stamp's appearance draws exactly the QR code of ``url`` (the qrcode library's matrix for it)."""
    import io

    from pyhanko.pdf_utils.reader import PdfFileReader

    from signing.pdf import stamp

    signature = PdfFileReader(io.BytesIO(pdf)).embedded_signatures[0]
    appearance = signature.sig_field["/AP"]["/N"].get_object().data
    return stamp.qr_commands(url, stamp.qr_size(stamp.DEFAULT_WIDTH, stamp.DEFAULT_HEIGHT)) in appearance


def test_verification_page_in_a_browser(signing_world, phone, tmp_path):
    world = signing_world
    token = world.token("sign:seal")
    sealed = requests.post(
        world.base + "/api/sign/pdf",
        data=make_pdf(),
        timeout=60,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/pdf"},
    )
    assert sealed.status_code == 200
    assert _stamp_encodes(sealed.content, sealed.headers["Hallmark-Verify-URL"])
    assert not _stamp_encodes(sealed.content, sealed.headers["Hallmark-Verify-URL"] + "x")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = phone
    page.goto(sealed.headers["Hallmark-Verify-URL"])
    assert page.locator("h1").inner_text() == "验证文件"
    assert "真实有效" in page.locator("#verdict").inner_text()
    assert page.locator("#signer").inner_text().startswith(DEPARTMENT)
    assert page.locator("#thumbnail").is_visible()  # which document: its first page, drawn server-side
    assert DEPARTMENT_CODE not in page.content()
    page.screenshot(path=str(SHOTS / "verify.png"), full_page=True)

    copy = tmp_path / "copy.pdf"
    copy.write_bytes(sealed.content)
    page.set_input_files("input[type=file]", str(copy))
    page.get_by_role("button", name="核验").click()
    page.wait_for_selector("#outcome")
    assert page.locator("#outcome").get_attribute("data-outcome") == "identical"
    assert "完全一致" in page.locator("#outcome").inner_text()
    assert page.locator("section.signature .badge").first.inner_text() == "有效"

    forged = tmp_path / "forged.pdf"
    forged.write_bytes(tamper(sealed.content))
    page.set_input_files("input[type=file]", str(forged))
    page.get_by_role("button", name="核验").click()
    page.wait_for_selector("#outcome[data-outcome=tampered]")
    assert page.locator("section.signature .badge").first.inner_text() == "无效"
    assert page.locator(".verdict").count() == 1  # only the failing verdict, no "genuine" beside it
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling on a phone
    page.screenshot(path=str(SHOTS / "verify-tampered.png"), full_page=True)

    page.get_by_role("link", name="English").click()
    assert page.locator("h1").inner_text() == "Verify a document"
