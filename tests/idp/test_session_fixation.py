"""The SSO cookie is renewed whenever the account or the level of the session changes (no session fixation).

Through the real app (Flask test client) on SQLite and PostgreSQL: the cookie a
browser holds before signing in again with a password (re-authentication) and
before real-name step-up is not the cookie it holds after, and the one from before
no longer opens the account page; the OpenID ``sid`` that halls know stays the same
(single logout still reaches them). A USB-key step-up goes through the same
``sessions.add_factor`` as the password re-authentication, checked here directly.
"""

from __future__ import annotations

import re

from core import db as core_db
from idp.models import Account
from idp.people import accounts, realname, sessions
from tests.idp.test_idp_oidc_protocol import oidc  # noqa: F401

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "Correct horse 42"


def csrf(client, path="/login") -> str:
    page = client.get(path)
    found = CSRF.search(page.get_data(as_text=True))
    assert found, page.get_data(as_text=True)[:500]
    return found.group(1)


def sso(client) -> str | None:
    cookie = client.get_cookie(sessions.COOKIE, domain="localhost")
    return cookie.value if cookie else None


def opens_account_page(world, cookie_value: str) -> bool:
    other = world.app.test_client()
    other.set_cookie(sessions.COOKIE, cookie_value, domain="localhost")
    return other.get("/account").status_code == 200


def login(client, identifier):
    answer = client.post("/login", data={"identifier": identifier, "password": PASSWORD, "csrf_token": csrf(client)})
    assert answer.status_code == 303, answer.get_data(as_text=True)[:500]
    return answer


def test_login_reauthentication_and_realname_step_up_renew_the_cookie(oidc):
    with oidc.tx() as db:
        accounts.register(db, identifier="fixation1", password=PASSWORD)
        accounts.register(db, identifier="fixation2", password=PASSWORD)
    person = realname.demo_people(1)[0]
    realname.import_people(oidc.ctx, [person], actor="test", source="test")
    browser = oidc.app.test_client()

    login(browser, "fixation2")
    other_account = sso(browser)
    login(browser, "fixation1")  # another account in the same browser
    first = sso(browser)
    assert first and first != other_account and not opens_account_page(oidc, other_account)
    assert opens_account_page(oidc, first)
    with oidc.ctx.sessions() as db:
        sid = sessions.from_cookie(db, oidc.ctx.secret_key, first).sid

    login(browser, "fixation1")  # the same account again: a fresh password proof
    again = sso(browser)
    assert again and again != first
    assert not opens_account_page(oidc, first), "the cookie from before re-authentication still opens the session"
    assert opens_account_page(oidc, again)

    step_up = "/login/step-up?next=%2Faccount&level=2"
    token = csrf(browser, step_up)
    answer = browser.post(step_up, data={"name": person.name, "resident_id": person.resident_id, "csrf_token": token})
    assert answer.status_code == 303, answer.get_data(as_text=True)[:500]
    stepped = sso(browser)
    assert stepped and stepped != again
    assert not opens_account_page(oidc, again), "the cookie from before real-name step-up still opens the session"
    assert browser.get("/account").status_code == 200
    with oidc.ctx.sessions() as db:
        row = sessions.from_cookie(db, oidc.ctx.secret_key, stepped)
        assert row is not None and row.sid == sid and row.acr == 2  # the halls' sid stays: single logout still reaches them


def test_adding_a_factor_renews_the_cookie(oidc):
    account_id = oidc.account("keyholder", proofed=True)
    key = oidc.ctx.secret_key
    with core_db.transaction(oidc.ctx.sessions) as db:
        row = sessions.start(db, db.get(Account, account_id), {"pwd"})
        sid, before = row.sid, sessions.cookie_for(db, key, row.sid)
    with core_db.transaction(oidc.ctx.sessions) as db:
        assert sessions.from_cookie(db, key, before).sid == sid
        sessions.add_factor(db, sessions.from_cookie(db, key, before), "hwk")
        after = sessions.cookie_for(db, key, sid)
    assert after != before
    with oidc.ctx.sessions() as db:
        assert sessions.from_cookie(db, key, before) is None
        assert sessions.sid_from_cookie(db, key, before) is None
        row = sessions.from_cookie(db, key, after)
        assert row is not None and row.acr == 3 and sessions.sid_from_cookie(db, key, after) == sid
