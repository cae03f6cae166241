"""Limits on the IdP's costly or sensitive work (issue 18 item 5), through the real app on SQLite and PostgreSQL.

* registration, per client address (each attempt costs an argon2 hash): 15 accounts
  from one address in 1.2 s were made before;
* wrong current passwords on the account page, per account: neither counted nor
  limited before, so a session someone got hold of could guess the password;
* USB-key login challenges, per client address.

Two apps built from the same settings on one database play two workers (or two
nodes): each has its own caches, and a limit must hold across them. People pages
answer a limit with a readable page, the challenge (asked by the page's script) with
problem+json; both with 429 and ``Retry-After``.
"""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import func, select

from core import db as core_db
from core.models import AuditEvent
from idp.models import Account
from idp.people import accounts, passwords
from idp.settings import IdPSettings

PRIVACY = IdPSettings().privacy_version  # the privacy notice in force, accepted at registration

ISSUER = "https://id.test"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "Correct horse 42"


def _apps(tmp_path, migrated, count=2, **env):
    from hallmark.app import create_app
    from tests.conftest import app_settings

    engine, _ = migrated
    settings = app_settings(tmp_path, engine.url.render_as_string(hide_password=False), HALLMARK_PUBLIC_URL=ISSUER, **env)
    return [create_app(settings) for _ in range(count)]


@pytest.fixture
def workers(tmp_path, migrated, key_manager):
    apps = _apps(
        tmp_path,
        migrated,
        HALLMARK_REGISTER_BURST="3",
        HALLMARK_PASSWORD_CHECK_BURST="3",
        HALLMARK_CERT_CHALLENGE_BURST="3",
        # no refill while the test runs
        HALLMARK_REGISTER_PER_MINUTE="0.01",
        HALLMARK_PASSWORD_CHECK_PER_MINUTE="0.01",
        HALLMARK_CERT_CHALLENGE_PER_MINUTE="0.01",
    )
    yield apps
    for app in apps:
        app.extensions["hallmark.services"].close()


def client(app, address: str):
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = address
    return browser


def csrf(browser, path="/register") -> str:
    found = CSRF.search(browser.get(path).get_data(as_text=True))
    assert found, path
    return found.group(1)


def register(browser, name: str, token: str | None = None):
    form = {"identifier": name, "password": PASSWORD, "password2": PASSWORD, "privacy": PRIVACY, "csrf_token": token or csrf(browser)}
    return browser.post("/register", data=form, headers={"Accept-Language": "zh-CN,zh;q=0.9"})


def count_accounts(app) -> int:
    ctx = app.extensions["hallmark.services"].idp
    with core_db.read_only(ctx.sessions) as db:
        return db.scalar(select(func.count()).select_from(Account))


def test_fifteen_registrations_from_one_address_make_at_most_the_burst(tmp_path, migrated, key_manager):
    """The finding as probed: 15 registrations from one address in a row, with the default settings."""
    defaults = IdPSettings()  # not the suite's relaxed ones (tests.conftest.TEST_LIMITS)
    (app,) = _apps(
        tmp_path,
        migrated,
        count=1,
        HALLMARK_REGISTER_BURST=str(defaults.register_burst),
        HALLMARK_REGISTER_PER_MINUTE=str(defaults.register_per_minute),
    )
    try:
        burst = app.extensions["hallmark.services"].idp.settings.register_burst
        browser = client(app, "198.51.100.7")
        token = csrf(browser)
        statuses = [register(browser, f"prober{n:02d}", token).status_code for n in range(15)]
        assert statuses == [303] * burst + [429] * (15 - burst)
        assert count_accounts(app) == burst
    finally:
        app.extensions["hallmark.services"].close()


def test_registration_is_limited_per_address_across_workers(workers):
    a, b = workers
    first, second = client(a, "203.0.113.5"), client(b, "203.0.113.5")
    for n in range(3):  # one allowance for both workers
        assert register(first if n % 2 else second, f"resident{n}").status_code == 303
    before = count_accounts(a)
    for browser in (first, second):
        limited = register(browser, "resident9")
        assert limited.status_code == 429
        assert limited.headers["Content-Type"].startswith("text/html")
        assert int(limited.headers["Retry-After"]) >= 1
        assert "注册次数过多" in limited.get_data(as_text=True)
    assert count_accounts(a) == before  # nothing made past the limit
    # A taken name or a refused password counts as well: each costs the hash.
    assert register(client(a, "203.0.113.6"), "resident0").status_code == 400
    # Another address is not affected.
    assert register(client(b, "203.0.113.7"), "resident10").status_code == 303


def sign_in(app, address: str, name: str):
    browser = client(app, address)
    token = csrf(browser, "/login")
    done = browser.post("/login", data={"identifier": name, "password": PASSWORD, "csrf_token": token})
    assert done.status_code == 303, done.get_data(as_text=True)
    return browser


def change(browser, current: str, new: str = "New horse 4242"):
    token = csrf(browser, "/account")
    form = {"current_password": current, "new_password": new, "new_password2": new, "csrf_token": token}
    return browser.post("/account/password", data=form, headers={"Accept-Language": "zh-CN,zh;q=0.9"})


def test_wrong_current_passwords_are_counted_audited_and_limited_per_account(workers):
    a, b = workers
    ctx_a, ctx_b = (app.extensions["hallmark.services"].idp for app in workers)
    with core_db.transaction(ctx_a.sessions) as db:
        owner = accounts.register(db, identifier="liming", password=PASSWORD)
        other = accounts.register(db, identifier="hanmei", password=PASSWORD)
        old_hash = owner.password_hash
    # Guesses from two addresses through two workers: one allowance for the account.
    guessers = [sign_in(a, "192.0.2.1", "liming"), sign_in(b, "192.0.2.2", "liming")]
    for n in range(3):
        wrong = change(guessers[n % 2], f"Guess number {n}")
        assert wrong.status_code == 403
    with core_db.read_only(ctx_a.sessions) as db:
        failed = db.scalars(select(AuditEvent).where(AuditEvent.action == "idp.account.password_check_failed")).all()
    assert [event.target for event in failed] == [owner.id] * 3
    assert [json.loads(event.details)["ip"] for event in failed] == ["192.0.2.1", "192.0.2.2", "192.0.2.1"]
    # Past the limit even the right password is not checked: a 429 page with Retry-After, nothing changed.
    for browser in guessers:
        limited = change(browser, PASSWORD)
        assert limited.status_code == 429 and limited.headers["Content-Type"].startswith("text/html")
        assert int(limited.headers["Retry-After"]) >= 1
        assert "当前密码输错次数过多" in limited.get_data(as_text=True)
    with pytest.raises(accounts.AccountRefusal) as refused:
        accounts.change_own_password(ctx_b, owner.id, PASSWORD, "New horse 4242")
    assert refused.value.status == 429
    with core_db.read_only(ctx_a.sessions) as db:
        assert db.get(Account, owner.id).password_hash == old_hash
    # Another account is not affected, and its right password changes it.
    done = change(sign_in(a, "192.0.2.1", "hanmei"), PASSWORD)
    assert done.status_code == 303
    with core_db.read_only(ctx_a.sessions) as db:
        assert passwords.verify(db.get(Account, other.id).password_hash, "New horse 4242")


def challenge(app, address: str):
    browser = client(app, address)
    token = csrf(browser, "/login")
    return browser.post("/login/cert/challenge", data={"csrf_token": token, "purpose": "login"}, headers={"Accept": "application/json"})


def test_login_challenges_are_limited_per_address_across_workers(workers):
    a, b = workers
    for n in range(3):
        assert challenge(workers[n % 2], "198.18.0.1").status_code == 200
    for app in (a, b):
        limited = challenge(app, "198.18.0.1")
        assert limited.status_code == 429
        assert limited.headers["Content-Type"] == "application/problem+json"
        assert limited.get_json()["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
    assert challenge(b, "198.18.0.2").status_code == 200
