"""A login that cannot be turned against its owner (issue 16 item 4), through the real app on SQLite and PostgreSQL.

Before, five wrong passwords locked an account for 15 minutes: anyone who knew a
mobile number or username could keep its owner out. Now wrong passwords make the
next attempts carry a solved proof-of-work challenge (ALTCHA format, idp.people.
loginguard), harder with each failure, per name and per address, counted in the
database. Two apps built from the same settings on one database play two workers.
The challenges are solved here by ``loginguard.solve`` (the page does it in JavaScript).
"""

from __future__ import annotations

import base64
import json
import re

import pytest
from sqlalchemy import func, select

from core import db as core_db
from core.models import AuditEvent
from idp.models import Account
from idp.people import accounts, loginguard

ISSUER = "https://id.test"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "Correct horse 42"
BASE, CAP = 64, 512


@pytest.fixture
def workers(tmp_path, migrated, key_manager):
    from hallmark.app import create_app
    from tests.conftest import app_settings

    engine, _ = migrated
    settings = app_settings(
        tmp_path,
        engine.url.render_as_string(hide_password=False),
        HALLMARK_PUBLIC_URL=ISSUER,
        HALLMARK_LOGIN_FREE_FAILURES="3",
        HALLMARK_LOGIN_POW_BASE=str(BASE),
        HALLMARK_LOGIN_POW_MAX=str(CAP),
        HALLMARK_LOGIN_DELAY_MAX_SECONDS="0",  # no waiting in a test; the not-before check has its own test
        HALLMARK_LOGIN_NOTICE_AFTER="10",
    )
    apps = [create_app(settings) for _ in range(2)]
    yield apps
    for app in apps:
        app.extensions["hallmark.services"].close()


def ctx_of(app):
    return app.extensions["hallmark.services"].idp


def client(app, address: str):
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = address
    return browser


def challenge_for(browser, token: str, name: str) -> dict:
    answer = browser.post("/login/challenge", data={"identifier": name, "csrf_token": token})
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    return answer.get_json()


def login(app, address: str, name: str, password: str, *, solve: bool = True, proof: str | None = None):
    browser = client(app, address)
    token = CSRF.search(browser.get("/login").get_data(as_text=True)).group(1)
    if proof is None:
        found = challenge_for(browser, token, name)
        proof = loginguard.solve(found) if found["maxnumber"] and solve else ""
    form = {"identifier": name, "password": password, "csrf_token": token, "next": "/account", "altcha": proof}
    return browser.post("/login", data=form, headers={"Accept-Language": "zh-CN,zh;q=0.9"})


def actions(app, action: str, target: str | None = None) -> list[dict]:
    with core_db.read_only(ctx_of(app).sessions) as db:
        query = select(AuditEvent).where(AuditEvent.action == action)
        if target is not None:
            query = query.where(AuditEvent.target == target)
        return [json.loads(event.details or "{}") for event in db.scalars(query.order_by(AuditEvent.seq))]


def new_account(app, name: str = "liming") -> Account:
    with core_db.transaction(ctx_of(app).sessions) as db:
        return accounts.register(db, identifier=name, password=PASSWORD)


def test_a_hundred_wrong_passwords_from_other_sources_do_not_keep_the_owner_out(workers):
    a, b = workers
    owner = new_account(a)
    # 100 guesses from 100 addresses through two workers; the guesser even solves every challenge asked.
    statuses = {login(workers[n % 2], f"198.51.100.{n}", "liming", f"Guess number {n}").status_code for n in range(100)}
    assert statuses == {401}
    assert len(actions(a, "idp.login.failed", owner.id)) == 100
    # Both workers ask the next attempt for the hardest challenge: the count is in the database, not per process.
    for app in workers:
        browser = client(app, "203.0.113.9")
        token = CSRF.search(browser.get("/login").get_data(as_text=True)).group(1)
        assert challenge_for(browser, token, "liming")["maxnumber"] == CAP
    # The owner, from their own address: without a solved challenge, asked for one (not locked) ...
    refused = login(b, "203.0.113.9", "liming", PASSWORD, solve=False)
    assert refused.status_code == 401 and "需要完成一项安全验证" in refused.get_data(as_text=True)
    # ... with one, in.
    done = login(b, "203.0.113.9", "liming", PASSWORD)
    assert done.status_code == 303 and done.headers["Location"].startswith("/account")
    with core_db.read_only(ctx_of(a).sessions) as db:
        row = db.get(Account, owner.id)
        assert row.status == "active" and row.locked_until is None
    # The owner was told once (audit; no confirmed number to text), not at every failure; no lock was recorded.
    assert len(actions(a, "idp.login.owner_notified", owner.id)) == 1
    assert actions(a, "idp.account.locked") == []
    # A success starts the name's count again: the next sign-in from a fresh address needs no challenge.
    browser = client(a, "203.0.113.10")
    token = CSRF.search(browser.get("/login").get_data(as_text=True)).group(1)
    assert challenge_for(browser, token, "liming") == {"maxnumber": 0}


def test_the_difficulty_grows_with_failures_for_the_name_and_for_the_address(workers):
    a, b = workers
    new_account(a, "hanmei")
    needed = []
    for n in range(7):
        needed.append(accounts.login_needs(ctx_of(b), "hanmei", "192.0.2.200")[0])
        assert login(workers[n % 2], f"192.0.2.{n}", "hanmei", "Wrong password 1").status_code == 401
    assert needed == [0, 0, 0, BASE, 2 * BASE, 4 * BASE, CAP]
    # One address guessing many names is challenged for any name, an unknown one included; another address is not.
    for n in range(4):
        login(a, "192.0.2.99", f"someone{n}", "Wrong password 1")
    assert accounts.login_needs(ctx_of(b), "nobody-at-all", "192.0.2.99")[0] == 2 * BASE  # 4 failures: one past the free 3
    assert accounts.login_needs(ctx_of(b), "nobody-at-all", "192.0.2.98")[0] == 0


def test_a_name_without_an_account_is_challenged_and_answered_as_one_with(workers):
    a, _ = workers
    new_account(a, "zhaoliu")
    pages = {}
    for name in ("zhaoliu", "qianqi"):  # qianqi has no account
        answers = [login(a, f"10.9.{n}.{len(name)}", name, "Wrong password 1") for n in range(5)]
        pages[name] = [(r.status_code, r.get_data(as_text=True).replace(name, "NAME")) for r in answers]
        assert accounts.login_needs(ctx_of(a), name, "10.0.0.1")[0] == 4 * BASE  # 5 failures: two past the free 3
    assert [s for s, _ in pages["zhaoliu"]] == [s for s, _ in pages["qianqi"]] == [401] * 5
    strip = re.compile(r'(csrf_token" value|data-csrf|nonce)="[^"]+"')
    assert [strip.sub("", p) for _, p in pages["zhaoliu"]] == [strip.sub("", p) for _, p in pages["qianqi"]]


def test_a_challenge_counts_once_only_signed_solved_in_time_and_hard_enough(workers):
    a, b = workers
    owner = new_account(a, "sunba")
    for n in range(4):
        login(a, f"172.16.0.{n}", "sunba", "Wrong password 1")
    ctx = ctx_of(a)
    maxnumber, _ = accounts.login_needs(ctx, "sunba", "172.16.1.1")
    assert maxnumber == 2 * BASE
    solved = loginguard.solve(loginguard.issue(ctx, maxnumber))
    assert login(a, "172.16.1.1", "sunba", "Wrong password 2", proof=solved).status_code == 401  # counted as a wrong password
    replayed = login(b, "172.16.1.1", "sunba", PASSWORD, proof=solved)  # the same solution again, at the other worker
    assert replayed.status_code == 401 and "需要完成一项安全验证" in replayed.get_data(as_text=True)
    # A challenge signed under another key, one changed after signing, one too easy, one not yet due, one expired.
    forged = json.loads(base64.b64decode(loginguard.solve(loginguard.issue(ctx, maxnumber))))
    forged["signature"] = "0" * 64
    too_easy = loginguard.solve(loginguard.issue(ctx, 8))
    early = loginguard.solve(loginguard.issue(ctx, maxnumber, delay=600))
    import time

    expired = loginguard.solve(loginguard.issue(ctx, maxnumber, now=time.time() - 3600))
    for proof in (base64.b64encode(json.dumps(forged).encode()).decode(), too_easy, early, expired, "not base64 at all"):
        refused = login(a, "172.16.1.2", "sunba", PASSWORD, proof=proof)
        assert refused.status_code == 401
    reasons = [event["reason"] for event in actions(a, "idp.login.challenge_refused", owner.id)]
    assert reasons == ["replayed", "signature", "too_easy", "early", "expired", "malformed"]
    # The right password with a good challenge: in.
    assert login(b, "172.16.1.2", "sunba", PASSWORD).status_code == 303
    with core_db.read_only(ctx.sessions) as db:
        assert db.scalar(select(func.count()).select_from(Account).where(Account.locked_until.is_not(None))) == 0
