"""A real browser (Debian's chromium, headless, Playwright) clicks "USB Key 登录" on the login page.

Everything is the real thing: ``hallmark serve``, the demo USB key (a SoftHSM2 token
with a person-auth certificate, made by ``hallmark demo prepare``) and the local
agent ``hallmark-key serve`` on 127.0.0.1, which the page's script calls across
origins. Screenshots go to ``/tmp/hallmark-shots/`` (or ``HALLMARK_SHOTS``).
"""

from __future__ import annotations

import json
import os
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
    button.click()
    page.wait_for_url(base + "/account")
    body = page.locator("main").inner_text()
    assert "第 3 级" in body and "数字证书" in body and "我的数字证书" in body
    assert "有效" in body and "尚未用于登录" not in body  # the certificate is now bound to the account
    page.screenshot(path=str(SHOTS / "certlogin-2-account.png"), full_page=True)
    log = (instance / "agent.log").read_text()
    assert base in log  # the agent logged what it signed and for which origin
