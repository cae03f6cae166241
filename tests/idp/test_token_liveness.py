"""A token stops at every JSON API the moment its grant ends, not when it expires.

Through the real app factory (Flask test client) on SQLite and PostgreSQL: an
access token revoked at ``/oauth/revoke`` (RFC 7009), a token of a client that
was removed, and one of an ended session are refused by the CA API and the
licence API with ``401`` and ``WWW-Authenticate: Bearer error="invalid_token"``,
although their signature and ``exp`` are still good and each was accepted a
moment before (so the bearer check's claims cache was warm).
"""

from __future__ import annotations

import json

from sqlalchemy import delete, select

from core.models import AuditEvent
from idp.models import Client
from idp.oidc import clients
from idp.people import sessions
from tests.idp.test_audience import CA_API, LICENCES_API, access_token, world  # noqa: F401
from tests.idp.test_idp_oidc_protocol import CB, basic

LICENCE_TYPE_FIELDS = "/api/licences/types/11100000000013952E999/fields"  # no such type: 404 while the token counts


def approval(world, client_id="approval") -> str:
    return world.client(
        client_id,
        redirect_uris=[],
        grant_types=["client_credentials"],
        first_party=False,
        scopes=["ca:read", "ca:issue", "licences:read"],
    )


def ca_list(world, token):
    return world.rp.get("/api/ca/certificates", headers={"Authorization": f"Bearer {token}"})


def ca_issue(world, token):
    # Not a valid request: a token that counts gets 400, one that does not 401 before the body is read.
    return world.rp.post("/api/ca/certificates", json={}, headers={"Authorization": f"Bearer {token}"})


def licence_fields(world, token):
    return world.rp.get(LICENCE_TYPE_FIELDS, headers={"Authorization": f"Bearer {token}"})


def assert_invalid_token(response):
    assert response.status_code == 401, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_a_revoked_access_token_is_refused_by_the_apis_at_once(world):
    secret = approval(world)
    for_ca = access_token(world, "approval", secret, resource=CA_API, scope="ca:read ca:issue")
    for_licences = access_token(world, "approval", secret, resource=LICENCES_API, scope="licences:read")
    assert ca_list(world, for_ca).status_code == 200 and ca_issue(world, for_ca).status_code == 400
    assert licence_fields(world, for_licences).status_code == 404

    for token in (for_ca, for_licences):
        revoked = world.rp.post("/oauth/revoke", data={"token": token}, headers=basic("approval", secret))
        assert revoked.status_code == 200
        assert world.introspect(token, "approval", secret) == {"active": False}

    assert_invalid_token(ca_list(world, for_ca))
    assert_invalid_token(ca_issue(world, for_ca))
    assert_invalid_token(licence_fields(world, for_licences))
    assert "revoked" in ca_list(world, for_ca).get_json()["detail"]
    with world.ctx.sessions() as db:
        refused = db.scalars(select(AuditEvent).where(AuditEvent.action == "idp.token.refused")).all()
    details = [json.loads(event.details) for event in refused]
    assert {d["path"] for d in details} >= {"/api/ca/certificates", LICENCE_TYPE_FIELDS}
    assert all(event.actor == "client:approval" for event in refused) and {d["reason"] for d in details} == {"revoked"}


def test_a_removed_clients_token_no_longer_issues_certificates(world):
    secret = approval(world)
    token = access_token(world, "approval", secret, resource=CA_API, scope="ca:read ca:issue")
    assert ca_issue(world, token).status_code == 400
    with world.tx() as db:
        clients.remove(world.ctx, db, "approval", actor="test")
    assert_invalid_token(ca_issue(world, token))
    assert_invalid_token(ca_list(world, token))


def test_a_client_removed_by_another_process_stops_its_tokens_here(world):
    # Another node deletes the row: nothing in this process hears of it, the database says so.
    secret = approval(world, "elsewhere")
    token = access_token(world, "elsewhere", secret, resource=CA_API, scope="ca:read ca:issue")
    assert ca_list(world, token).status_code == 200
    with world.tx() as db:
        db.execute(delete(Client).where(Client.client_id == "elsewhere"))
    assert_invalid_token(ca_list(world, token))
    assert_invalid_token(ca_issue(world, token))


def test_a_token_of_an_ended_session_is_refused(world):
    secret = world.client("hall", scopes=["openid", "profile", "ca:read"])
    sid = world.login(world.account("li"))
    code = world.code(scope="openid ca:read", resource=CA_API)
    answer = world.token({"grant_type": "authorization_code", "code": code, "redirect_uri": CB}, "hall", secret)
    assert answer.status_code == 200, answer.get_json()
    token = answer.get_json()["access_token"]
    assert ca_list(world, token).status_code == 200
    with world.tx() as db:
        sessions.end(db, sid, actor="test")
    assert_invalid_token(ca_list(world, token))
