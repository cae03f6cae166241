"""Signing in to the console through the identity provider's real authorization-code flow (PKCE), against ``hallmark serve``.

The console is a first-party client of its own IdP: the browser goes to the
authorization endpoint, signs in on the IdP's login page, and comes back to
``/admin/callback``; the console's own cookie is HttpOnly, SameSite=Strict and
limited to /admin. Someone with no staff role is refused (403, audited);
sessions end when left alone; the callback refuses answers that do not belong to
the browser's own sign-in.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from admin import login, roles
from core import db as core_db
from core.db import utc_now
from tests.admin.conftest import CSRF, DEPT_A

pytestmark = pytest.mark.slow


def test_a_staff_member_signs_in_through_the_idp(console):
    clerk = console.person((roles.COUNTER_CLERK, DEPT_A), usb=False, name="窗口甲")
    browser = console.browser(clerk)
    first = browser.get("/admin")
    assert first.status_code == 303 and first.headers["Location"].startswith("/admin/login?next=")
    to_idp = browser.get(first.headers["Location"])
    assert to_idp.status_code == 303
    asked = urlsplit(to_idp.headers["Location"])
    query = {k: v[0] for k, v in parse_qs(asked.query).items()}
    assert asked.path == "/oauth/authorize" and query["client_id"] == "hallmark-admin"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["acr_values"] == "urn:hallmark:loa:2" and query["redirect_uri"] == console.base + "/admin/callback"
    cookie = to_idp.headers["Set-Cookie"]
    assert cookie.startswith("hallmark_admin=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie

    home = browser.follow(to_idp)
    assert home.status_code == 200, home.text[:500]
    assert "员工管理控制台" in home.text and "窗口甲" in home.text and "窗口受理员" in home.text and DEPT_A in home.text
    # A counter clerk sees no section they cannot use.
    assert 'href="/admin/roles"' not in home.text and 'href="/admin/seals"' not in home.text
    english = browser.get("/admin?lang=en")
    assert "Staff Console" in english.text and "Counter clerk" in english.text
    logins = [e for e in console.audit("admin.login") if e.actor == f"account:{clerk.account_id}"]
    assert len(logins) == 1 and '"acr":2' in logins[0].details


def test_someone_without_a_role_is_refused_and_it_is_recorded(console):
    nobody = console.person(usb=False, name="无角色")
    answer = console.browser(nobody).sign_in()
    assert answer.status_code == 403 and "没有任何角色" in answer.text
    refused = [e for e in console.audit("admin.login.refused") if e.actor == f"account:{nobody.account_id}"]
    assert refused and '"reason":"no_role"' in refused[-1].details


def test_an_answer_for_another_sign_in_is_refused(console):
    clerk = console.person((roles.COUNTER_CLERK, DEPT_A), usb=False)
    browser = console.browser(clerk)
    started = browser.get("/admin/login")
    assert started.status_code == 303
    # Not the state this browser's sign-in sent, and no such sign-in at all.
    forged = browser.get("/admin/callback?code=abc&state=forged")
    assert forged.status_code == 400 and "不属于本浏览器" in forged.text
    other = console.browser(clerk)
    stray = other.get("/admin/callback?code=abc&state=whatever&again=1")
    assert stray.status_code == 400 and "不是从这里发起" in stray.text
    # Without the Strict cookie (a link from another site), the console asks once more from its own page.
    bounce = other.get("/admin/callback?code=abc&state=whatever")
    assert bounce.status_code == 200 and "again=1" in bounce.text


def test_a_session_left_alone_ends(console):
    clerk = console.person((roles.COUNTER_CLERK, DEPT_A), usb=False)
    browser = console.browser(clerk)
    home = browser.sign_in()
    assert home.status_code == 200
    form_token = CSRF.search(home.text).group(1)
    token = browser.http.cookies.get("hallmark_admin", path="/admin")
    ctx = console.admin
    with core_db.transaction(ctx.sessions) as db:
        assert login.find(ctx, db, token) is not None
        later = utc_now() + timedelta(minutes=ctx.settings.admin_idle_minutes + 1)
        assert login.find(ctx, db, token, now=later) is None  # and it is ended for good
    again = browser.get("/admin")
    assert again.status_code == 303 and again.headers["Location"].startswith("/admin/login")
    # A form sent after the session ended is refused with a page saying so, and nothing is done.
    late = browser.http.post(
        browser.url("/admin/roles/grant"), data={"csrf_token": form_token, "account": clerk.username, "role": "auditor"}
    )
    assert late.status_code == 401 and "控制台会话已结束" in late.text
    recorded = [e for e in console.audit("admin.refused", "/admin/roles/grant") if e.actor == f"account:{clerk.account_id}"]
    assert len(recorded) == 1 and '"reason":"no_session"' in recorded[0].details
    assert [e for e in console.audit("admin.session.idle") if e.actor == f"account:{clerk.account_id}"]
    with console.services.sessions() as db:
        assert roles.staff(db, clerk.account_id).roles == {roles.COUNTER_CLERK}


def test_sign_out_ends_the_console_session_and_goes_to_the_idp(console):
    clerk = console.person((roles.COUNTER_CLERK, DEPT_A), usb=False)
    browser = console.browser(clerk)
    assert browser.sign_in().status_code == 200
    out = browser.post("/admin/logout", {})
    assert out.status_code == 303
    location = out.headers["Location"]
    assert "id_token_hint=" in location and "post_logout_redirect_uri=" in location
    assert browser.get("/admin").status_code == 303
    assert [e for e in console.audit("admin.logout") if e.actor == f"account:{clerk.account_id}"]


def test_a_post_without_the_csrf_token_is_refused(console):
    admin = console.person((roles.SYSTEM_ADMIN, None), usb=False)
    browser = console.browser(admin)
    assert browser.sign_in().status_code == 200
    for token in ({}, {"csrf_token": "forged"}):
        answer = browser.http.post(
            browser.url("/admin/roles/grant"), data={**token, "account": admin.username, "role": "auditor"}, allow_redirects=False
        )
        assert answer.status_code == 400 and "未执行" in answer.text and "此次操作已被记录" in answer.text
    with console.services.sessions() as db:
        assert roles.staff(db, admin.account_id).roles == {roles.SYSTEM_ADMIN}
    recorded = [e for e in console.audit("admin.csrf_refused", "/admin/roles/grant") if e.actor == f"account:{admin.account_id}"]
    assert len(recorded) == 2


def test_hallmark_init_registers_the_console_and_the_server_follows_its_public_url(console):
    from sqlalchemy import create_engine, text

    from idp.models import Client
    from idp.oidc import clients
    from tests.conftest import instance_template

    template = instance_template()  # made by `hallmark init`, on its default public URL
    engine = create_engine(f"sqlite:///{template / 'hallmark.db'}")
    with engine.connect() as connection:
        query = "select redirect_uris, client_type, min_acr, first_party from idp_clients where client_id = 'hallmark-admin'"
        row = tuple(connection.execute(text(query)).one())
    engine.dispose()
    assert row == ('["http://127.0.0.1:8000/admin/callback"]', "public", 2, 1)
    with console.services.sessions() as db:
        served = clients.describe(db.get(Client, "hallmark-admin"))
    assert served["redirect_uris"] == [console.base + "/admin/callback"] and served["auth_method"] == "none"
    assert served["grant_types"] == ["authorization_code"] and served["post_logout_redirect_uris"] == [console.base + "/admin/signed-out"]


def test_signing_out_at_the_idp_ends_the_console_session_too(console):
    import time

    import requests

    clerk = console.person((roles.COUNTER_CLERK, DEPT_A), usb=False)
    browser = console.browser(clerk)
    assert browser.sign_in().status_code == 200
    # Signed out on the IdP's own account page (as from a hall): single logout reaches the console by back channel.
    out = browser.post("/account/sign-out", {}, csrf_from="/account")
    assert out.status_code == 303
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not [
        e for e in console.audit("admin.session.ended_by_idp") if e.actor == f"account:{clerk.account_id}"
    ]:
        time.sleep(0.2)
    answer = browser.get("/admin")
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/admin/login")
    # Anyone else's notice is refused: it must be a logout token signed by the IdP for the console.
    forged = requests.post(console.base + "/admin/api/backchannel-logout", data={"logout_token": "e30.e30.c2ln"}, timeout=10)
    assert forged.status_code == 400 and forged.json()["error"] == "invalid_request"
