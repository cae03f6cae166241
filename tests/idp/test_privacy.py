"""Withdrawing a hall's access, the halls list and the data export, through the real app factory (SQLite, PostgreSQL).

A hall that got a code, tokens and a refresh token for an account: the resident's
withdrawal (``/account/halls/<client>/revoke``, a form with its CSRF token) ends the
consent, the refresh token (refresh refused, introspection inactive) and the access
token of the same grant, and is audited; the halls list and the export show what
the hall received and never a secret.
"""

from __future__ import annotations

import json
import re

from sqlalchemy import select

from core.models import AuditEvent
from idp.models import Account, Consent, RefreshToken
from idp.oidc import consent
from idp.people import privacy
from tests.idp.test_idp_oidc_protocol import CB, oidc  # noqa: F401

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def test_withdrawing_a_hall_ends_its_consent_and_tokens(oidc):
    secret = oidc.client("hall", first_party=False)
    account_id = oidc.account()
    oidc.login(account_id)
    with oidc.tx() as db:
        consent.grant(db, account_id, "hall", ["openid", "profile"])
    first = oidc.token({"grant_type": "authorization_code", "code": oidc.code(), "redirect_uri": CB}, "hall", secret).get_json()
    assert oidc.introspect(first["refresh_token"], "hall", secret)["active"] is True

    page = oidc.browser.get("/account/halls")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "/account/halls/hall/revoke" in text
    with oidc.ctx.sessions() as db:
        [hall] = privacy.halls(db, account_id)
    assert hall["client_id"] == "hall" and hall["scopes"] == ["openid", "profile"] and hall["live"] is True
    assert hall["first"] is not None and hall["last"] >= hall["first"]

    exported = oidc.browser.get("/account/export")
    assert exported.status_code == 200 and exported.headers["Cache-Control"] == "no-store"
    body = exported.get_data(as_text=True)
    data = json.loads(body)
    assert [h["client_id"] for h in data["halls"]] == ["hall"] and data["consents"][0]["scope"] == ["profile"]
    with oidc.ctx.sessions() as db:
        hashes = [*list(db.scalars(select(RefreshToken.token_hash))), db.get(Account, account_id).password_hash]
    leaked = [value for value in [*hashes, first["refresh_token"], first["access_token"], secret] if len(value) > 8 and value in body]
    assert leaked == []

    token = CSRF.search(text).group(1)
    done = oidc.browser.post("/account/halls/hall/revoke", data={"csrf_token": token})
    assert done.status_code == 303 and done.location.endswith("/account/halls?notice=hall-revoked")
    with oidc.ctx.sessions() as db:
        assert db.get(Consent, (account_id, "hall")) is None
        assert all(row.revoked_at is not None for row in db.scalars(select(RefreshToken).where(RefreshToken.account_id == account_id)))
        [event] = db.scalars(select(AuditEvent).where(AuditEvent.action == "idp.hall.revoked")).all()
        assert event.target == "hall" and json.loads(event.details) == {"consent": True, "token_families": 1, "codes": 0}
    assert oidc.introspect(first["refresh_token"], "hall", secret) == {"active": False}
    assert oidc.introspect(first["access_token"], "hall", secret) == {"active": False}
    refreshed = oidc.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, "hall", secret)
    assert refreshed.get_json()["error"] == "invalid_grant"
    with oidc.ctx.sessions() as db:
        assert privacy.halls(db, account_id)[0]["live"] is False  # still listed as used, nothing live any more


def test_withdrawing_needs_the_form_token_and_a_known_hall(oidc):
    oidc.client("hall", first_party=False)
    oidc.login(oidc.account())
    assert oidc.browser.post("/account/halls/hall/revoke").status_code == 400  # no CSRF token: refused, nothing done
    token = CSRF.search(oidc.browser.get("/account").get_data(as_text=True)).group(1)
    assert oidc.browser.post("/account/halls/nosuch/revoke", data={"csrf_token": token}).status_code == 404
