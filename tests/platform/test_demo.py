"""The demo `make run` starts (examples/run.py): the IdP and two halls, on free ports of 127.0.0.1.

Single sign-on and single logout across the two halls over real HTTP, and in a real
browser (Debian's chromium, headless, driven by Playwright): login, consent at a
third-party hall, step-up from basic to real-name for a matter, and logout.
Screenshots go to ``/tmp/hallmark-shots/`` (or ``HALLMARK_SHOTS``).
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests import browser as chromium
from tests.browser import SHOTS
from tests.conftest import ROOT, free_port, hallmark_env, initialised_copy, run_hallmark, wait_for_http

pytestmark = pytest.mark.slow
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Demo:
    def __init__(self, instance: Path, env: dict, idp: str, halls: dict, accounts: dict, process: subprocess.Popen):
        self.instance, self.env, self.idp, self.halls, self.accounts, self.process = instance, env, idp, halls, accounts, process

    def hall(self, client_id: str) -> str:
        return self.halls[client_id]["base"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    instance = tmp_path_factory.mktemp("demo")
    idp_port, city, county, agent = free_port(), free_port(), free_port(), free_port()
    env = hallmark_env(
        instance,
        HALLMARK_BIND=f"127.0.0.1:{idp_port}",
        HALLMARK_PUBLIC_URL=f"http://127.0.0.1:{idp_port}",
        HALLMARK_DEMO_HALL_PORTS=f"{city},{county}",
        HALLMARK_DEMO_APPROVAL_PORTS=f"{free_port()},{free_port()},{free_port()}",
        HALLMARK_WORKERS="1",
        HALLMARK_CERT_AGENT_PORT=str(agent),
    )
    initialised_copy(instance)
    log = (instance / "demo.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "examples/run.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 90
        while "Press Ctrl-C" not in (instance / "demo.log").read_text():
            assert process.poll() is None, (instance / "demo.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the demo did not start in 90 s"
            time.sleep(0.2)
        data = json.loads((instance / "demo.json").read_text())
        banner = (instance / "demo.log").read_text()
        for username, who in data["accounts"].items():
            assert username in banner and who["password"] in banner  # a newcomer reads them off the terminal
        yield Demo(instance, env, f"http://127.0.0.1:{idp_port}", data["halls"], data["accounts"], process)
    finally:
        process.send_signal(signal.SIGTERM)  # run.py stops its children itself
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
    assert process.returncode == 0


def login_at(browser: requests.Session, demo: Demo, hall: str, username: str) -> requests.Response:
    """Click "log in" at a hall and, if the IdP shows its login form, fill it in; returns the hall's page."""
    response = browser.get(demo.hall(hall) + "/login", timeout=15)
    if "/login?next=" in response.url:
        token = CSRF.search(response.text).group(1)
        next_url = re.search(r'name="next" value="([^"]+)"', response.text).group(1).replace("&amp;", "&")
        response = browser.post(
            demo.idp + "/login",
            timeout=15,
            data={"csrf_token": token, "next": next_url, "identifier": username, "password": demo.accounts[username]["password"]},
        )
    return response


def test_single_sign_on_and_single_logout_across_the_two_halls(demo):
    browser = requests.Session()
    city = login_at(browser, demo, "city-hall", "demo-realname")
    assert city.url.startswith(demo.hall("city-hall")) and 'id="level" data-acr="urn:hallmark:loa:2"' in city.text
    assert "演示居民乙" in city.text and "***" in city.text, city.text[city.text.find("<section>") :][
        :600
    ]  # the masked resident ID from userinfo

    # The county hall: no login form, straight back with the same person.
    county = browser.get(demo.hall("county-hall") + "/login", timeout=15)
    assert county.url.startswith(demo.hall("county-hall")) and "演示居民乙" in county.text
    assert all("/login?next=" not in r.headers.get("Location", "") for r in county.history)

    # Log out at the city hall: the IdP session ends, and the county hall hears it on its back channel.
    form_page = browser.post(demo.hall("city-hall") + "/logout", timeout=15)
    assert form_page.url.startswith(demo.idp + "/logout/done") and "您已退出登录" in form_page.text
    assert demo.hall("city-hall") + "/?state=" in form_page.text  # the way back to the hall
    deadline = time.monotonic() + 15
    while "未登录" not in browser.get(demo.hall("county-hall") + "/", timeout=15).text:
        assert time.monotonic() < deadline, "the county hall still shows the person as logged in"
        time.sleep(0.2)
    assert "未登录" in browser.get(demo.hall("city-hall") + "/", timeout=15).text
    # Logging in again needs the password again.
    again = browser.get(demo.hall("county-hall") + "/login", timeout=15)
    assert "/login?next=" in again.url


def test_a_hall_notices_an_sso_session_without_a_click_by_prompt_none(demo):
    stranger = requests.Session()
    first = stranger.get(demo.hall("county-hall") + "/", timeout=15)
    asked = [r.headers["Location"] for r in first.history if r.headers.get("Location", "").startswith(demo.idp + "/oauth/authorize")]
    assert len(asked) == 1 and "prompt=none" in asked[0]  # asked the IdP once, silently
    assert first.url.startswith(demo.hall("county-hall")) and "未登录" in first.text and "login_required" not in first.text
    assert stranger.get(demo.hall("county-hall") + "/", timeout=15).history == []  # and not again at every page
    cookieless = requests.get(demo.hall("county-hall") + "/", timeout=15)  # a client that keeps no cookies is not sent round for ever
    assert cookieless.status_code == 200 and "未登录" in cookieless.text and len(cookieless.history) <= 4

    person = requests.Session()
    login_at(person, demo, "city-hall", "demo-realname")
    county = person.get(demo.hall("county-hall") + "/", timeout=15)  # the home page, not the login button
    assert county.url.startswith(demo.hall("county-hall")) and "演示居民乙" in county.text
    assert all("/login?next=" not in r.headers.get("Location", "") for r in county.history)


def test_a_sealed_sample_and_its_verification_page(demo):
    data = json.loads((demo.instance / "demo.json").read_text())
    seal = data["seal"]
    assert seal["verify_url"].startswith(demo.idp + "/verify/") and seal["verify_url"] in (demo.instance / "demo.log").read_text()
    pdf = Path(seal["sealed_pdf"]).read_bytes()
    assert pdf.startswith(b"%PDF") and b"/ByteRange" in pdf
    page = requests.get(seal["verify_url"], timeout=15)
    assert page.status_code == 200 and "示范市政务服务管理局" in page.text
    # The person holding the file uploads it: the same file, signature intact.
    checked = requests.post(seal["verify_url"], files={"file": ("demo-sealed.pdf", pdf, "application/pdf")}, timeout=60)
    assert checked.status_code == 200 and 'data-outcome="identical"' in checked.text, checked.text[:500]


def test_a_matter_above_the_level_is_refused_for_a_basic_account_that_cannot_prove_more_by_prompt_none(demo):
    browser = requests.Session()
    page = login_at(browser, demo, "city-hall", "demo-basic")
    assert 'data-acr="urn:hallmark:loa:1"' in page.text
    # A level-1 matter goes straight through on the existing session.
    done = browser.get(demo.hall("city-hall") + "/matter/policy-enquiry", timeout=15)
    assert 'id="doing"' in done.text and "政策咨询" in done.text
    # A level-2 matter: the IdP asks for real-name verification (step-up page), not for the password again.
    step = browser.get(demo.hall("city-hall") + "/matter/sole-trader-registration", timeout=15)
    assert step.url.startswith(demo.idp + "/login/step-up") and 'name="resident_id"' in step.text and 'name="password"' not in step.text


@pytest.fixture
def browser(tmp_path):
    with chromium.page(tmp_path / "profile", viewport={"width": 1100, "height": 900}) as page:
        yield page


@pytest.fixture
def partner_hall(demo):
    """A third-party hall (not first-party, so the IdP asks for consent), run from examples/hall like the others."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    added = run_hallmark(
        demo.instance,
        "idp",
        "client",
        "add",
        "--json",
        "--name",
        "便民服务合作平台",
        "--client-id",
        f"partner-{port}",
        "--redirect-uri",
        base + "/callback",
        "--scope",
        "openid profile hallmark:realname",
        "--backchannel-logout-uri",
        base + "/backchannel-logout",
        "--post-logout-redirect-uri",
        base + "/",
        **{k: v for k, v in demo.env.items() if k.startswith("HALLMARK_")},
    )
    assert added.returncode == 0, added.stderr
    client = json.loads(added.stdout)
    env = {
        **demo.env,
        "HALL_CLIENT_ID": client["client_id"],
        "HALL_CLIENT_SECRET": client["client_secret"],
        "HALL_NAME": "便民服务合作平台",
        "HALL_NAME_EN": "Partner service platform",
        "HALL_PORT": str(port),
        "HALL_IDP": demo.idp,
    }
    process = subprocess.Popen(
        [sys.executable, "examples/hall/hall.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_http(base + "/", process=process)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


def test_browser_login_consent_step_up_and_logout(demo, partner_hall, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    # The person the banner tells demo-basic to verify as (synthetic; the full number in an owner-only file).
    basic = demo.accounts["demo-basic"]
    assert (Path(basic["verify_file"]).stat().st_mode & 0o777) == 0o600
    with open(basic["verify_file"], encoding="utf-8") as handle:
        (person,) = list(csv.DictReader(handle))
    assert person["name"] == basic["verify_as"]
    page = browser

    # Log in at the partner hall with the basic demo account.
    page.goto(partner_hall + "/")
    page.click("#login")
    page.fill("input[name=identifier]", "demo-basic")
    page.fill("input[name=password]", demo.accounts["demo-basic"]["password"])
    page.screenshot(path=str(SHOTS / "demo-1-login.png"))
    page.locator("input[name=password]").press("Enter")
    # A third-party hall: the IdP asks for consent first.
    page.wait_for_selector("text=便民服务合作平台")
    assert "是否允许" in page.content()
    page.screenshot(path=str(SHOTS / "demo-2-consent.png"))
    page.click("button[value=allow]")
    page.wait_for_selector("#level")
    assert page.get_attribute("#level", "data-acr") == "urn:hallmark:loa:1"

    # A level-2 matter: step up by verifying the real name, without the password again.
    page.click("a[data-matter=sole-trader-registration]")
    page.wait_for_selector("input[name=resident_id]")
    assert page.locator("input[name=password]").count() == 0
    page.fill("input[name=name]", person["name"])
    page.fill("input[name=resident_id]", person["resident_id"])
    page.screenshot(path=str(SHOTS / "demo-3-step-up.png"))
    page.locator("input[name=resident_id]").press("Enter")
    page.wait_for_selector("#doing")
    assert page.get_attribute("#level", "data-acr") == "urn:hallmark:loa:2"
    assert "个体工商户注册" in page.inner_text("#doing")
    page.screenshot(path=str(SHOTS / "demo-4-stepped-up.png"))

    # The city hall knows this person already (single sign-on, first-party: no consent, no form).
    page.goto(demo.hall("city-hall") + "/login")
    page.wait_for_selector("#level")
    assert "演示居民甲" in page.inner_text("#who")

    # Log out at the partner hall: back at the partner hall, logged out; the city hall too.
    page.goto(partner_hall + "/")
    page.click("#logout")
    page.wait_for_url(partner_hall + "/**")
    page.wait_for_selector("#login")
    page.screenshot(path=str(SHOTS / "demo-5-logged-out.png"))
    deadline = time.monotonic() + 15
    while True:
        page.goto(demo.hall("city-hall") + "/")
        if page.locator("#login").count():
            break
        assert time.monotonic() < deadline, "the city hall still shows the person as logged in"
        time.sleep(0.3)


def test_browser_certificate_step_up_with_the_demo_usb_key_and_agent(demo, browser):
    """A level-3 matter: the real-name demo person steps up with the demo USB key through the running agent, confirming on its page."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser
    page.goto(demo.hall("county-hall") + "/login")
    if page.locator("#level").count() == 0:
        page.fill("input[name=identifier]", "demo-realname")
        page.fill("input[name=password]", demo.accounts["demo-realname"]["password"])
        page.locator("input[name=password]").press("Enter")
    page.wait_for_selector("#level")
    page.click("a[data-matter=marriage-registration]")
    page.wait_for_selector("[data-cert-login]")
    assert page.locator("input[name=password]").count() == 0  # only the missing factor is asked for
    page.screenshot(path=str(SHOTS / "demo-6-usb-key-step-up.png"))
    with page.expect_popup() as opened:
        page.click("[data-cert-login]")
    popup = opened.value  # hallmark-key's own page: the holder confirms there
    popup.wait_for_url(re.compile(r"^http://127\.0\.0\.1:\d+/confirm/"))
    assert "用 USB Key 登录该网站" in popup.locator("main").inner_text()
    popup.screenshot(path=str(SHOTS / "demo-7-usb-key-confirm.png"))
    popup.get_by_role("button", name="确认签名").click(no_wait_after=True)
    page.wait_for_selector("#doing", timeout=30_000)
    assert page.get_attribute("#level", "data-acr") == "urn:hallmark:loa:3"
    assert "hwk" in page.inner_text("section") and "婚姻登记" in page.inner_text("#doing")
    page.screenshot(path=str(SHOTS / "demo-8-certificate-level.png"))
