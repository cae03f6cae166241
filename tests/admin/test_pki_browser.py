"""The PKI section in a real browser (Debian's chromium, headless, 1280×800): a CA officer finds a certificate, revokes
it with the keyboard alone, and the health page's CRL number moves on; the server's freshly fetched CRL lists the
serial (read by openssl) and its OCSP responder says revoked (openssl ocsp). Every PKI page is checked by axe-core
(no serious or critical violation) and for sideways scrolling. Screenshots go to ``/tmp/hallmark-shots/admin-pki-*.png``."""

from __future__ import annotations

import re
import subprocess

import pytest
import requests

from admin import roles
from tests import browser
from tests.admin.test_console_browser import DESKTOP, check, sign_in, tab_to
from tests.admin.test_pki_console import crl_lists, csr_pem
from tests.browser import CHROMIUM

pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason=browser.MISSING), pytest.mark.slow]


@pytest.fixture
def desktop(tmp_path):
    with browser.page(tmp_path / "profile", timeout_ms=20_000, **DESKTOP) as page:
        yield page


def crl_number(page, authority: str) -> int:
    return int(page.locator(f'tr[data-authority="{authority}"] td[data-crl-number]').get_attribute("data-crl-number"))


def test_a_ca_officer_revokes_a_certificate_with_the_keyboard_and_health_reflects_it(console, desktop, tmp_path):
    from ca import issuance

    page = desktop
    ca = console.services["ca"]
    row, _ = issuance.issue(
        ca, "server-tls", csr_pem("browser.example"), issuance.Identity(name="browser", sans=("browser.example",)), actor="test"
    )
    officer = console.person((roles.CA_OFFICER, None), usb=False, name="键盘证书")
    sign_in(page, console, officer)

    # By keyboard: the navigation's PKI link.
    page.keyboard.press("Tab")
    tab_to(page, "el.getAttribute('href') === '/admin/pki'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/pki")
    check(page, "pki-certificates")
    page.goto(console.base + "/admin/pki/health")
    before = crl_number(page, "services")
    check(page, "pki-health")
    page.goto(console.base + "/admin/pki/trust")
    check(page, "pki-trust")
    page.goto(console.base + "/admin/pki/issue")
    check(page, "pki-issue")

    # Find it by profile, open it, revoke it: keyboard only.
    page.goto(console.base + "/admin/pki")
    tab_to(page, "el.id === 'profile'")
    page.keyboard.type("server-tls")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/pki?**")
    tab_to(page, f"el.getAttribute('href') === '/admin/pki/certificates/{row.serial}'", limit=200)
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/admin/pki/certificates/{row.serial}")
    check(page, "pki-certificate")
    tab_to(page, "el.id === 'reason'", limit=80)
    page.select_option("#reason", "keyCompromise")  # as the keyboard's arrow keys would choose it
    tab_to(page, "el.tagName === 'BUTTON' && el.textContent.trim() === '吊销证书'")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/admin/pki/certificates/{row.serial}?notice=revoked")
    assert page.locator('[data-status="revoked"]').first.is_visible()
    assert "密钥泄露" in page.locator('[data-reason="keyCompromise"]').inner_text()
    check(page, "pki-revoked")

    page.goto(console.base + "/admin/pki/health")
    assert crl_number(page, "services") > before
    assert page.locator('tr[data-authority="services"] [data-state]').get_attribute("data-state") == "ok"

    # The judges: openssl reads the CRL the server publishes now, and asks its OCSP responder.
    assert crl_lists(console, "services", row.serial)
    issuer = tmp_path / "services.pem"
    der = requests.get(f"{console.base}/pki/ca/services.crt", timeout=30).content
    issuer.write_bytes(subprocess.run(["openssl", "x509", "-inform", "DER"], input=der, capture_output=True, check=True).stdout)
    asked = subprocess.run(
        ["openssl", "ocsp", "-issuer", str(issuer), "-serial", "0x" + row.serial, "-url", f"{console.base}/pki/ocsp", "-noverify", "-no_nonce"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert re.search(r"0x[0-9a-fA-F]+: revoked", asked.stdout), asked.stdout + asked.stderr
