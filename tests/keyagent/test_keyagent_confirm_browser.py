"""The agent's confirmation page in a real browser (Debian's chromium, headless, Playwright).

The holder confirms in chromium and the asking page gets a signature that verifies;
and pages of other origins, as chromium really sends their requests (its own
``Origin`` and ``Sec-Fetch-*`` headers, which no page can set), cannot post the
confirmation form, not even with the right CSRF token. (That the page refuses to be
framed is checked over HTTP in test_keyagent_agent.py: here chromium never sent a
routed page's iframe request to the loopback agent at all.)
Those pages are served to chromium by Playwright under their own origins; the agent
is the real ``hallmark-key serve`` with the demo USB key.
"""

from __future__ import annotations

import html

import pytest

from tests import browser as chromium
from tests.browser import CHROMIUM, SHOTS
from tests.keyagent.test_keyagent_agent import HALL, RunningAgent, b64url, challenge, demo_key, verify  # noqa: F401 - fixture
from tests.keyagent_fixtures import agent_outcome, ask_agent, confirm_in_browser, confirmation_token

pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason=chromium.MISSING), pytest.mark.slow]
EVIL = "http://evil.test"


@pytest.fixture(scope="module")
def agent(demo_key, tmp_path_factory):
    running = RunningAgent(demo_key, tmp_path_factory.mktemp("agent-log"), "--config", str(demo_key.agent_config))
    yield running
    running.stop()


def test_the_holder_confirms_in_the_browser_and_the_page_gets_a_signature(agent, tmp_path):
    data = challenge()
    asked = ask_agent(agent.base, {"purpose": "login", "data": b64url(data)}, HALL).json()
    with chromium.page(tmp_path / "profile", viewport={"width": 800, "height": 800}) as page:
        shown = confirm_in_browser(page, asked["confirm_url"], shot=SHOTS / "keyagent-confirm-login.png")
        after = page.locator("main").inner_text()
    assert shown.index("确认签名请求") < shown.index("Confirm a signing request")  # Chinese first, English second
    assert HALL in shown and "用 USB Key 登录该网站" in shown and "IDCCN-" in shown
    assert "已签名" in after and "Signed" in after
    signed = agent_outcome(agent.base, asked["request"], HALL)
    assert signed.status_code == 200, signed.text
    verify(signed.json(), data)


def test_a_page_of_another_origin_cannot_confirm(agent, tmp_path):
    asked = ask_agent(agent.base, {"purpose": "login", "data": b64url(challenge())}, HALL).json()
    url = asked["confirm_url"]
    token = confirmation_token(url)  # the worst case: the other page somehow knows the token
    forged_form = (
        f'<!doctype html><form id="f" method="post" action="{html.escape(url)}">'
        f'<input name="csrf_token" value="{html.escape(token)}"><input name="decision" value="approve"></form>'
        '<script>document.getElementById("f").submit()</script>'
    )
    pages = {"forge": forged_form}
    with chromium.page(tmp_path / "profile") as page:
        for origin in (EVIL, HALL):  # a stranger, and even a page of the hall that asked
            page.context.route(
                f"{origin}/**",
                lambda route: route.fulfill(status=200, content_type="text/html", body=pages[route.request.url.split("/")[-1]]),
            )
            page.goto(f"{origin}/forge")
            page.wait_for_url(url)
            refused = page.locator("main").inner_text()
            assert "只能在 hallmark-key 自己的确认页面上确认" in refused and "nothing was signed" in refused
            page.context.unroute(f"{origin}/**")
    log = agent.text_log()
    for origin in (EVIL, HALL):
        assert f"from origin '{origin}' (Sec-Fetch-Site 'cross-site'): not the agent's own page" in log
    pending = agent_outcome(agent.base, asked["request"], HALL)
    assert pending.status_code == 202 and "signature" not in pending.text  # nothing was decided
