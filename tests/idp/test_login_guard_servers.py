"""The login guard across two ``hallmark serve`` processes on one SQLite database (issue 16 item 4, "limits hold across
two server processes"): wrong passwords sent to one server make the other ask for a solved challenge, a solution spent
at one is refused at the other, and the owner gets in at either with one. Real HTTP; the challenge is solved here as
the login page's script solves it (idp.people.loginguard.solve)."""

from __future__ import annotations

import re

import pytest
import requests

from idp.people import loginguard
from tests.conftest import initialised_copy, start_server, stop_server

PASSWORD = "Correct horse 42"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PRIVACY = re.compile(r'name="privacy" value="([^"]+)"')
GUARD = {
    "HALLMARK_LOGIN_FREE_FAILURES": "2",
    "HALLMARK_LOGIN_POW_BASE": "100",
    "HALLMARK_LOGIN_POW_MAX": "800",
    "HALLMARK_LOGIN_DELAY_MAX_SECONDS": "0",
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    instance = initialised_copy(tmp_path_factory.mktemp("guard") / "instance")
    started = []
    try:
        for _ in range(2):
            started.append(start_server(instance, workers=1, **GUARD))
        yield [base for _, base in started]
    finally:
        for process, _ in started:
            stop_server(process)


def page_token(browser, url: str) -> tuple[str, str]:
    text = browser.get(url, timeout=10).text
    return CSRF.search(text).group(1), text


def register(base: str, name: str) -> None:
    browser = requests.Session()
    token, text = page_token(browser, base + "/register")
    form = {"identifier": name, "password": PASSWORD, "password2": PASSWORD, "csrf_token": token}
    privacy = PRIVACY.search(text)
    if privacy:
        form["privacy"] = privacy.group(1)
    done = browser.post(base + "/register", data=form, allow_redirects=False, timeout=30)
    assert done.status_code == 303, done.text[:500]


def challenge(browser, base: str, token: str, name: str) -> dict:
    return browser.post(base + "/login/challenge", data={"csrf_token": token, "identifier": name}, timeout=10).json()


def login(base: str, name: str, password: str, *, solve: bool = True, proof: str | None = None) -> tuple[requests.Response, str]:
    browser = requests.Session()
    token, _ = page_token(browser, base + "/login")
    if proof is None:
        asked = challenge(browser, base, token, name)
        proof = loginguard.solve(asked) if asked["maxnumber"] and solve else ""
    form = {"csrf_token": token, "identifier": name, "password": password, "next": "/account", "altcha": proof}
    return browser.post(base + "/login", data=form, allow_redirects=False, timeout=30), proof


def test_the_login_guard_holds_across_two_server_processes(servers):
    first, second = servers
    register(first, "guarded1")
    for n in range(2):  # the free failures, at the first server
        assert login(first, "guarded1", f"Wrong guess {n}")[0].status_code == 401
    # The second server counts them too: the next attempt needs a challenge there, right password or not.
    browser = requests.Session()
    token, _ = page_token(browser, second + "/login")
    assert challenge(browser, second, token, "guarded1")["maxnumber"] == 100
    refused, _ = login(second, "guarded1", PASSWORD, solve=False)
    assert refused.status_code == 401 and "需要完成一项安全验证" in refused.text
    # A wrong guess with a solved challenge at the second server doubles the difficulty at the first.
    wrong, spent = login(second, "guarded1", "Wrong guess 3")
    assert wrong.status_code == 401 and spent
    token, _ = page_token(browser, first + "/login")
    assert challenge(browser, first, token, "guarded1")["maxnumber"] == 200
    # The solution spent at the second server is refused at the first (single use, recorded in the database).
    replayed, _ = login(first, "guarded1", PASSWORD, proof=spent)
    assert replayed.status_code == 401
    # The owner, with the right password and a fresh solution, at either server.
    for base in (first, second):
        done, _ = login(base, "guarded1", PASSWORD)
        assert done.status_code == 303 and done.headers["Location"].endswith("/account")
