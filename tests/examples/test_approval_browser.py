"""Issue 17's steps 1-8 in a real browser (Debian's chromium, headless, Playwright) across the real processes.

What ``make run`` starts: ``hallmark serve`` after ``hallmark demo prepare``, the approval system
and its second instance, the payment service, and ``hallmark-key serve`` with the demo USB key (a
SoftHSM2 token holding the officer's person certificate and the demo enterprise's login and
signing certificates; the login page names the one it wants).
The applicant, the counter kiosk (a fake camera), the officer and the second system are
browser contexts of their own; every click is the person's. Pages of the example are checked
with axe-core. Screenshots go to ``/tmp/hallmark-shots/`` (or ``HALLMARK_SHOTS``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import requests

from tests.browser import ARGS, CHROMIUM, SHOTS
from tests.conftest import ROOT, free_port, initialised_copy, run_hallmark, start_server, stop_server, wait_for_http
from tests.examples.test_approval import ENTERPRISE, demo_credit_code, start_payment_and_approval_systems

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not found: apt-get install -y chromium fonts-noto-cjk"),
    pytest.mark.slow,
]
DESKTOP = {"viewport": {"width": 1280, "height": 800}, "locale": "zh-CN"}


def axe_clean(page) -> None:
    from axe_playwright_python.sync_playwright import Axe

    violations = Axe().run(page).response["violations"]
    assert not [v for v in violations if v["impact"] in ("serious", "critical")], [(v["id"], v["help"]) for v in violations]


class Agent:
    """``hallmark-key serve`` for one token on a fixed port, restartable with another token."""

    def __init__(self, port: int, origins: list[str], log):
        self.port, self.origins, self.log, self.process = port, origins, log, None

    def serve(self, token_args: list[str], env: dict) -> None:
        self.stop()
        origins = [a for o in self.origins for a in ("--allow-origin", o)]
        command = [sys.executable, "-m", "keyagent.cli", "serve", *token_args, "--port", str(self.port), *origins]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_http(f"http://127.0.0.1:{self.port}/v1/status", process=self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(15)
            self.process = None


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    instance = tmp_path_factory.mktemp("approval-browser") / "instance"
    initialised_copy(instance)
    idp_port, first, second, payment, agent_port = (free_port() for _ in range(5))
    idp = f"http://127.0.0.1:{idp_port}"
    common = {"HALLMARK_PUBLIC_URL": idp, "HALLMARK_CERT_AGENT_PORT": str(agent_port)}
    prepared = run_hallmark(
        instance,
        "demo",
        "prepare",
        "--json",
        timeout=300,
        HALLMARK_DEMO_HALL_PORTS=f"{free_port()},{free_port()}",
        HALLMARK_DEMO_APPROVAL_PORTS=f"{first},{second},{payment}",
        **common,
    )
    assert prepared.returncode == 0, prepared.stderr
    demo = json.loads(prepared.stdout)
    approval = demo["approval"]
    assert demo["approval"]["enterprise_key"] == ["enterprise-auth", "enterprise-sign"]
    server, _ = start_server(
        instance,
        port=idp_port,
        log=instance / "server.log",
        HALLMARK_EVENT_ENDPOINT_HOSTS=f"127.0.0.1:{first} 127.0.0.1:{second}",
        **common,
    )
    log = (instance / "processes.log").open("w")
    agent = Agent(agent_port, [idp, f"http://127.0.0.1:{first}"], log)
    children = []
    try:
        start_payment_and_approval_systems(children, approval, idp, payment, log, APPROVAL_AGENT=f"http://127.0.0.1:{agent_port}")
        # The demo USB key, as make run serves it: demo-realname's person certificate and the demo enterprise's two.
        agent.serve(
            ["--config", demo["usb_key"]["agent_config"]],
            {k: v for k, v in os.environ.items() if not k.startswith(("HALLMARK_", "SOFTHSM2_"))},
        )
        status = requests.get(f"http://127.0.0.1:{agent_port}/v1/status", headers={"Origin": idp}, timeout=10).json()
        subjects = " ".join(c["subject"] for c in status["certificates"])
        assert len(status["certificates"]) == 3 and subjects.count("NTRCN-") == 2 and "IDCCN-" in subjects  # one key, three certificates
        yield {"idp": idp, "first": f"http://127.0.0.1:{first}", "second": f"http://127.0.0.1:{second}", "demo": demo, "agent": agent}
    finally:
        agent.stop()
        for child in children:
            child.terminate()
            child.wait(10)
        stop_server(server)
        log.close()


def confirm_on_the_agent(page, click) -> None:
    """Click what makes the page ask the agent; confirm on the agent's own page, which opens in a popup."""
    with page.expect_popup() as opened:
        click()
    popup = opened.value
    popup.wait_for_url(re.compile(r"^http://127\.0\.0\.1:\d+/confirm/"))
    popup.get_by_role("button", name="确认签名").click(no_wait_after=True)


def log_in(page, idp: str, username: str, password: str) -> None:
    page.wait_for_url(re.compile(re.escape(idp) + r"/login"))
    page.locator('input[name="identifier"]').fill(username)
    page.locator('input[name="password"]').fill(password)
    page.locator('input[name="password"]').press("Enter")


@pytest.mark.timeout(600)
def test_steps_1_to_8_in_a_browser(site):
    from playwright.sync_api import sync_playwright

    idp, first, second, demo = site["idp"], site["first"], site["second"], site["demo"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    fake_camera = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS + fake_camera, headless=True)
        applicant, kiosk, desk, other = (browser.new_context(**DESKTOP) for _ in range(4))
        for context in (applicant, kiosk, desk, other):
            context.set_default_timeout(30_000)
        kiosk.grant_permissions(["camera"], origin=first)

        # 1-2. Log in for the enterprise with its USB key (level 3 from the catalogue), allow the licence comparison.
        page = applicant.new_page()
        page.goto(first + "/")
        assert page.locator("#matter-level").inner_text() == "L3"
        axe_clean(page)
        page.locator("#login").click()
        log_in(page, idp, "demo-legalrep", demo["accounts"]["demo-legalrep"]["password"])
        page.wait_for_url(re.compile(re.escape(idp) + r"/account/act-for"))
        confirm_on_the_agent(page, lambda: page.locator("[data-cert-login]").click())
        page.wait_for_url(re.compile(re.escape(idp) + r"/(oauth/authorize|consent)"))
        page.screenshot(path=str(SHOTS / "approval-1-consent.png"), full_page=True)
        page.locator('button[name="decision"][value="allow"]').click()
        page.wait_for_url(first + "/")
        assert page.locator("#level").get_attribute("data-acr") == "urn:hallmark:loa:3"
        from licenses import demo as licence_demo

        face = licence_demo.sample_face(licence_demo.BUSINESS_LICENCE, holder_code=demo_credit_code(), holder_name=ENTERPRISE)
        page.locator("#legal_representative").fill(face["legal_representative"])
        page.locator("#premises").fill("Wusi Road 1")
        page.locator("#apply").click()
        page.wait_for_url(re.compile(re.escape(first) + r"/case/"))
        case = page.locator("#case").inner_text()
        axe_clean(page)

        # 3. Sign the form with the enterprise's key through the agent; the system validates it.
        confirm_on_the_agent(page, lambda: page.locator("#sign").click())
        page.locator('#case[data-state="signed"]').wait_for()
        # 4. Pay: the fee notice is sealed and the payment service checks it.
        page.locator("#pay").click()
        page.locator('#case[data-state="paid"]').wait_for()
        page.screenshot(path=str(SHOTS / "approval-2-paid.png"), full_page=True)

        # 5. The kiosk: device grant approved from the applicant's browser, then the camera photo.
        counter = kiosk.new_page()
        counter.goto(first + "/kiosk")
        counter.locator("#kiosk-start").click()
        link = counter.locator("#verification").get_attribute("href")
        page.goto(link)
        page.locator('button[name="decision"][value="approve"]').click()
        counter.locator("#photo").wait_for(state="visible", timeout=60_000)
        counter.locator("#photo").click()
        counter.locator("#kiosk-code").filter(has_text="已记录").wait_for()
        counter.screenshot(path=str(SHOTS / "approval-3-kiosk.png"), full_page=True)

        # 6. The officer logs in at level 3 with the demo key (now the agent's token) and approves.
        site["agent"].serve(
            ["--config", demo["usb_key"]["agent_config"]],
            {k: v for k, v in os.environ.items() if not k.startswith(("HALLMARK_", "SOFTHSM2_"))},
        )
        officer = desk.new_page()
        officer.goto(first + "/officer")
        officer.locator("#officer-login").click()
        log_in(officer, idp, "demo-realname", demo["accounts"]["demo-realname"]["password"])
        officer.wait_for_url(re.compile(re.escape(idp) + r"/login/step-up"))
        confirm_on_the_agent(officer, lambda: officer.locator("[data-cert-login]").click())
        officer.wait_for_url(first + "/officer")
        axe_clean(officer)
        officer.locator(f"#approve-{case}").click()
        officer.locator(f"#suspend-{case}").wait_for()
        page.goto(f"{first}/case/{case}")
        identifier = page.locator("#licence").inner_text()
        page.goto(idp + "/licences")
        assert identifier in page.content()

        # 7. The second system verifies it, and hears of its suspension.
        check = other.new_page()
        check.goto(second + "/verify")
        check.locator("#identifier").fill(identifier)
        check.locator("#operator").fill(ENTERPRISE)
        check.locator("#check").click()
        assert check.locator("#verdict").get_attribute("data-match") == "true"
        axe_clean(check)
        officer.locator(f"#suspend-{case}").click()
        for _ in range(60):
            check.goto(second + "/verify")
            if check.locator('[data-event="suspended"]').count():
                break
            check.wait_for_timeout(500)
        assert identifier in check.locator('[data-event="suspended"]').inner_text()
        check.screenshot(path=str(SHOTS / "approval-4-event.png"), full_page=True)

        # 8. Who looked: both systems, with purpose and matter.
        page.goto(idp + "/licences/access")
        text = page.locator("main").inner_text()
        assert (
            "food-approval-2" in text and "核验食品经营许可证" in text and "核验申请人营业执照" in text and "food-business-licence" in text
        )
        page.screenshot(path=str(SHOTS / "approval-5-access.png"), full_page=True)
        browser.close()
