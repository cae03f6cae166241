"""A real browser (Debian's chromium, headless, Playwright) clicks "USB Key 登录" on the login page.

Everything is the real thing: ``hallmark serve``, the demo USB key (a SoftHSM2 token
with a person-auth certificate, made by ``hallmark demo prepare``) and the local
agent ``hallmark-key serve`` on 127.0.0.1, which the page's script calls across
origins. The agent signs only after the holder confirms on its own page, which the
login page opens in a popup: the test presses 确认签名 (or 拒绝) there. Screenshots go
to ``/tmp/hallmark-shots/`` (or ``HALLMARK_SHOTS``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests import browser as chromium
from tests.browser import CHROMIUM, SHOTS
from tests.conftest import ROOT, free_port, initialised_copy, run_hallmark, start_server, stop_server, wait_for_http

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not found: apt-get install -y chromium fonts-noto-cjk"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    instance = tmp_path_factory.mktemp("certlogin-browser")
    initialised_copy(instance)
    agent_port = free_port()
    process, base = start_server(instance, HALLMARK_CERT_AGENT_PORT=str(agent_port))
    agent = None
    try:
        prepared = run_hallmark(
            instance, "demo", "prepare", "--json", timeout=300, HALLMARK_PUBLIC_URL=base, HALLMARK_CERT_AGENT_PORT=str(agent_port)
        )
        assert prepared.returncode == 0, prepared.stderr
        demo = json.loads(prepared.stdout)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HALLMARK_", "SOFTHSM2_"))}
        with (instance / "agent.log").open("w") as log:  # the agent keeps its own handle
            agent = subprocess.Popen(
                [sys.executable, "-m", "keyagent.cli", "serve", "--config", demo["usb_key"]["agent_config"], "--port", str(agent_port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_http(f"http://127.0.0.1:{agent_port}/v1/status", process=agent)
        yield base, demo, instance
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(15)
        stop_server(process)


@pytest.fixture
def browser(tmp_path):
    with chromium.page(tmp_path / "profile", timeout_ms=30_000, viewport={"width": 1280, "height": 900}) as page:
        yield page


def test_clicking_usb_key_login_signs_in_at_level_3(site, browser):
    base, demo, instance = site
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser
    page.goto(base + "/login?next=/account")
    button = page.get_by_role("button", name="USB Key 登录")
    assert button.is_visible()
    page.screenshot(path=str(SHOTS / "certlogin-1-login.png"), full_page=True)
    with page.expect_popup() as opened:
        button.click()
    popup = opened.value
    popup.wait_for_url(re.compile(r"^http://127\.0\.0\.1:\d+/confirm/"))
    shown = popup.locator("main").inner_text()
    assert "确认签名请求" in shown and "Confirm a signing request" in shown
    assert base in shown and "用 USB Key 登录该网站" in shown and "IDCCN-" in shown  # who asks, for what, with which certificate
    assert page.url.startswith(base + "/login")  # nothing happens on the login page until the holder confirms
    popup.screenshot(path=str(SHOTS / "certlogin-2-agent-confirm.png"), full_page=True)
    popup.get_by_role("button", name="确认签名").click(no_wait_after=True)  # the login page closes the popup once signed
    page.wait_for_url(base + "/account")
    body = page.locator("main").inner_text()
    assert "第 3 级" in body and "数字证书" in body and "我的数字证书" in body
    assert "有效" in body and "尚未用于登录" not in body  # the certificate is now bound to the account
    page.screenshot(path=str(SHOTS / "certlogin-3-account.png"), full_page=True)
    log = (instance / "agent.log").read_text()
    assert f"for origin {base}" in log and "confirmed by the holder" in log  # the agent logged what it signed and for whom


def test_denying_on_the_agent_page_signs_nobody_in(site, browser):
    base, demo, instance = site
    page = browser
    page.goto(base + "/login?next=/account")
    with page.expect_popup() as opened:
        page.get_by_role("button", name="USB Key 登录").click()
    popup = opened.value
    popup.wait_for_url(re.compile(r"/confirm/"))
    popup.get_by_role("button", name="拒绝").click(no_wait_after=True)
    status = page.locator(".certlogin [data-status]")  # the USB-key box's own (the scan-to-login box has one too)
    status.filter(has_text="USB Key 程序未签名").wait_for()
    assert "denied" in status.inner_text() and page.url.startswith(base + "/login")
    assert page.get_by_role("button", name="USB Key 登录").is_enabled()  # the holder may try again
    assert all(c["name"] != "hallmark_sso" for c in page.context.cookies(base))  # nobody signed in
