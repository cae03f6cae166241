"""Single logout through the real app (Flask test client) on SQLite and PostgreSQL, with real HTTP
back-channel endpoints on 127.0.0.1: RP-initiated logout, logout tokens, retries, front-channel,
and the refusals of the logout endpoint.
"""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from core import db as core_db
from core import outbox
from core.db import utc_now
from core.models import OutboxMessage
from idp.models import Account, LogoutDelivery, SSOSession
from idp.oidc import keys, logout
from idp.people import accounts, sessions
from tests.idp.test_idp_oidc_protocol import CB, CB2, ISSUER, VERIFIER, audit_actions, oidc  # noqa: F401 - oidc is a fixture
from tests.logout_receiver import Receiver, check_logout_token

AFTER = "https://hall.test/bye"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def two_halls(world, receiver, *, county_front=True):
    world.client("hall", backchannel_logout_uri=receiver.base + "/city", post_logout_redirect_uris=[AFTER])
    world.client(
        "county",
        redirect_uris=[CB2],
        backchannel_logout_uri=receiver.base + "/county",
        frontchannel_logout_uri="https://county.test/fc?x=1" if county_front else None,
    )


def signed_in_at_both(world):
    """A session that signed in to both halls; returns (sid, account id, the first hall's ID token)."""
    account_id = world.account("li")
    sid = world.login(account_id)
    code = world.code(verifier=VERIFIER, nonce="n")
    issued = world.token(
        {"grant_type": "authorization_code", "code": code, "redirect_uri": CB, "code_verifier": VERIFIER}, "hall", world.secrets["hall"]
    ).get_json()
    world.code(client_id="county", redirect_uri=CB2, verifier=VERIFIER)
    return sid, account_id, issued


@pytest.fixture
def world(oidc, receiver):
    oidc.secrets = {}
    original = oidc.client

    def client(client_id="hall", **kw):
        oidc.secrets[client_id] = original(client_id, **kw)
        return oidc.secrets[client_id]

    oidc.client = client
    two_halls(oidc, receiver)
    return oidc


def deliveries(world, sid):
    """Each hall's notices of the session by (client, channel): back-channel ones are core outbox messages."""
    states = {outbox.PENDING: "pending", outbox.DELIVERED: "delivered", outbox.DEAD: "failed"}
    with world.ctx.sessions() as db:
        found = {(d.client_id, d.channel): d for d in db.scalars(select(LogoutDelivery).where(LogoutDelivery.sid == sid))}
        for message in db.scalars(select(OutboxMessage).where(OutboxMessage.kind == logout.KIND)):
            if message.dedupe_key.startswith(f"{logout.KIND}:{sid}:"):
                client_id = message.dedupe_key.rsplit(":", 1)[1]
                found[(client_id, "back")] = SimpleNamespace(
                    status=states[message.state], attempts=message.attempts, last_error=message.last_error
                )
    return found


def deliver(world, now=None):
    return outbox.deliver_due(world.ctx.sessions, worker_id="test", now=now)


def test_rp_initiated_logout_reaches_every_hall(world, receiver):
    sid, account_id, issued = signed_in_at_both(world)
    answer = world.browser.get(
        "/oauth/logout", query_string={"id_token_hint": issued["id_token"], "post_logout_redirect_uri": AFTER, "state": "s-9"}
    )
    # The hint names this very session: no question asked.
    assert answer.status_code == 303 and answer.location.startswith("/logout/done?ticket=")
    cleared = answer.headers.getlist("Set-Cookie")
    assert any(c.startswith(f"{sessions.COOKIE}=;") for c in cleared)
    jwks = keys.jwks_dict(world.ctx)
    for path, client_id in (("/city", "hall"), ("/county", "county")):
        token = receiver.wait_for(path)[0]
        claims = check_logout_token(token, jwks, issuer=ISSUER, client_id=client_id)
        assert claims["sid"] == sid and claims["sub"] == account_id

    page = world.browser.get(answer.location)
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and "您已退出登录" in body
    # Front-channel: an iframe for the county hall with iss and sid, allowed by the page's CSP; then back to the hall with its state.
    assert f'src="https://county.test/fc?x=1&amp;iss=https%3A%2F%2Fid.test&amp;sid={sid}"' in body
    assert "frame-src https://county.test" in page.headers["Content-Security-Policy"]
    assert 'href="https://hall.test/bye?state=s-9"' in body
    # The session is over: its tokens and the next authorization say so.
    with world.ctx.sessions() as db:
        assert db.get(SSOSession, sid).ended_at is not None
    refreshed = world.token({"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}, "hall", world.secrets["hall"])
    assert refreshed.status_code == 400 and refreshed.get_json()["error"] == "invalid_grant"
    assert world.introspect(issued["access_token"], "hall", world.secrets["hall"]) == {"active": False}
    assert world.authorize(verifier=VERIFIER, prompt="none").location.startswith(CB + "?error=login_required")

    found = deliveries(world, sid)
    assert {k: v.status for k, v in found.items()} == {
        ("hall", "back"): "delivered",
        ("county", "back"): "delivered",
        ("county", "front"): "delivered",
    }
    actions = audit_actions(world)
    assert actions.count("idp.logout.delivered") == 2 and "idp.session.ended" in actions


def test_without_a_matching_hint_the_person_confirms(world, receiver):
    sid, _, _ = signed_in_at_both(world)
    asked = world.browser.get("/oauth/logout", query_string={"client_id": "hall", "post_logout_redirect_uri": AFTER, "state": "k"})
    body = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "要退出所有办事大厅吗？" in body and "Hall hall" in body
    form_token = body.split('name="form_token" value="')[1].split('"')[0]

    forged = world.browser.post("/oauth/logout", data={"form_token": form_token + "x", "decision": "logout", "client_id": "hall"})
    assert forged.status_code == 400
    stay = world.browser.post(
        "/oauth/logout",
        data={"form_token": form_token, "decision": "stay", "client_id": "hall", "post_logout_redirect_uri": AFTER, "state": "k"},
    )
    assert stay.status_code == 303 and stay.location == AFTER + "?state=k"
    with world.ctx.sessions() as db:
        assert db.get(SSOSession, sid).ended_at is None
    assert not deliveries(world, sid)

    done = world.browser.post(
        "/oauth/logout",
        data={"form_token": form_token, "decision": "logout", "client_id": "hall", "post_logout_redirect_uri": AFTER, "state": "k"},
    )
    assert done.status_code == 303 and done.location.startswith("/logout/done?")
    receiver.wait_for("/city")
    receiver.wait_for("/county")


def test_an_id_token_of_another_session_does_not_log_this_one_out(world):
    _, _, issued = signed_in_at_both(world)
    other = world.account("wang")
    sid_b = world.login(other)  # this browser now belongs to another person
    asked = world.browser.get("/oauth/logout", query_string={"id_token_hint": issued["id_token"]})
    assert asked.status_code == 200 and "form_token" in asked.get_data(as_text=True)
    with world.ctx.sessions() as db:
        assert db.get(SSOSession, sid_b).ended_at is None


@pytest.mark.parametrize(
    "query, expected",
    [
        ({"post_logout_redirect_uri": "https://evil.test/"}, "does not say which application"),
        ({"client_id": "hall", "post_logout_redirect_uri": "https://evil.test/"}, "is not registered for this application"),
        ({"client_id": "nobody", "post_logout_redirect_uri": AFTER}, "not registered with this service"),
        ({"id_token_hint": "e30.e30.c2ln"}, "not issued by this service"),
        ({"id_token_hint": "not-a-jwt"}, "not issued by this service"),
        ({"client_id": "x" * 65}, "too long"),
    ],
)
def test_refusals_are_pages_never_redirects(world, query, expected):
    account_id = world.account("zhao")
    sid = world.login(account_id)
    response = world.browser.get("/oauth/logout", query_string={**query, "lang": "en"})
    assert response.status_code == 400 and "Location" not in response.headers
    assert expected in response.get_data(as_text=True)
    with world.ctx.sessions() as db:
        assert db.get(SSOSession, sid).ended_at is None


def test_a_hint_for_another_client_and_repeated_parameters_are_refused(world):
    sid, _, issued = signed_in_at_both(world)
    mismatch = world.browser.get("/oauth/logout", query_string={"id_token_hint": issued["id_token"], "client_id": "county", "lang": "en"})
    assert mismatch.status_code == 400 and "different application" in mismatch.get_data(as_text=True)
    repeated = world.browser.get("/oauth/logout?lang=en&state=a&state=b")
    assert repeated.status_code == 400 and "repeats the parameter state" in repeated.get_data(as_text=True)
    # An access token is not an ID token, though we signed it.
    access = world.browser.get("/oauth/logout", query_string={"id_token_hint": issued["access_token"]})
    assert access.status_code == 400
    with world.ctx.sessions() as db:
        assert db.get(SSOSession, sid).ended_at is None


def test_failed_notices_are_retried_then_given_up_and_audited(world, receiver):
    receiver.answers["/city"] = [503, 503]
    receiver.answers["/county"] = [400]  # the hall refuses the token: retrying cannot help
    sid, _, _ = signed_in_at_both(world)
    # A password set by an operator ends every session of the account, and so tells its halls.
    with core_db.transaction(world.ctx.sessions) as db:
        account_id = db.get(SSOSession, sid).account_id
        accounts.set_password(db, db.get(Account, account_id), "Another-pass 2026", actor="test")
    receiver.wait_for("/city")
    receiver.wait_for("/county")
    for _ in range(100):
        found = deliveries(world, sid)
        if found[("hall", "back")].attempts == 1 and found[("county", "back")].status == "failed":
            break
        time.sleep(0.05)
    city = found[("hall", "back")]
    assert city.status == "pending" and city.attempts == 1 and "HTTP 503" in city.last_error
    assert found[("county", "back")].status == "failed" and "HTTP 400" in found[("county", "back")].last_error

    # Not due yet: nothing is sent.
    assert deliver(world).delivered == 0 and len(receiver.tokens("/city")) == 1
    later = utc_now() + logout.RETRY.ceiling(1) + timedelta(seconds=1)
    second = deliver(world, now=later)
    assert (second.delivered, second.retrying) == (0, 1) and len(receiver.tokens("/city")) == 2
    third = deliver(world, now=later + logout.RETRY.ceiling(2) + timedelta(seconds=1))
    assert third.delivered == 1
    city = deliveries(world, sid)[("hall", "back")]
    assert city.status == "delivered" and city.attempts == 3
    tokens = receiver.tokens("/city")
    assert len(set(tokens)) == 3  # a fresh token (jti) each attempt
    actions = audit_actions(world)
    assert "idp.logout.failed" in actions and "idp.logout.delivered" in actions and "idp.session.ended_all" in actions


def test_a_hall_that_never_answers_is_given_up_after_the_last_delay(world, receiver):
    receiver.answers["/city"] = [503] * (logout.RETRY.attempts + 1)
    sid, _, issued = signed_in_at_both(world)
    world.browser.get("/oauth/logout", query_string={"id_token_hint": issued["id_token"]})
    receiver.wait_for("/city")
    for _ in range(100):  # the attempt right after the logout has been recorded
        if deliveries(world, sid)[("hall", "back")].attempts == 1:
            break
        time.sleep(0.05)
    moment = utc_now()
    for failures in range(1, logout.RETRY.attempts):
        moment += logout.RETRY.ceiling(failures) + outbox.LEASE + timedelta(seconds=1)  # past the delay and any claim's lease
        deliver(world, now=moment)
    city = deliveries(world, sid)[("hall", "back")]
    assert city.status == "failed" and city.attempts == logout.RETRY.attempts
    # Given up: a later run sends nothing more.
    assert deliver(world, now=moment + timedelta(days=1)).claimed == 0
    assert len(receiver.tokens("/city")) == logout.RETRY.attempts


def test_the_session_cookie_is_not_the_bare_sid(world):
    account_id = world.account("qian")
    sid = world.login(account_id)
    world.browser.set_cookie(sessions.COOKIE, sid, domain="localhost")  # what a token's sid claim would give
    assert world.browser.get(
        "/oauth/authorize",
        query_string={
            "response_type": "code",
            "client_id": "hall",
            "redirect_uri": CB,
            "scope": "openid",
            "prompt": "none",
            "code_challenge": "x" * 43,
            "code_challenge_method": "S256",
        },
    ).location.startswith(CB + "?error=login_required")
    with world.ctx.sessions() as db:
        cookie = sessions.cookie_for(db, world.ctx.secret_key, sid)
        assert sessions.sid_from_cookie(db, world.ctx.secret_key, cookie) == sid
        assert sessions.sid_from_cookie(db, world.ctx.secret_key, sid + ".AAAA") is None
        assert sessions.sid_from_cookie(db, b"another key", cookie) is None


def test_the_logged_out_page_with_a_forged_ticket_acts_on_nothing(world):
    page = world.browser.get("/logout/done?ticket=forged")
    assert page.status_code == 200 and "您已退出登录" in page.get_data(as_text=True)
    assert "iframe" not in page.get_data(as_text=True)


def test_pending_notices_of_the_old_queue_move_to_the_outbox_on_upgrade(world, receiver):
    """idp_0003: a back-channel notice still pending in idp_logout_deliveries becomes an outbox message and is sent."""
    from alembic import command

    from hallmark import components

    sid, account_id, _ = signed_in_at_both(world)
    engine = world.ctx.sessions.kw["bind"]
    config = core_db._alembic_config(engine, components.migration_locations())
    command.downgrade(config, "idp_0002_authorization_details")
    moment = utc_now()
    with core_db.transaction(world.ctx.sessions) as db:
        for client_id, channel, status in (("hall", "back", "pending"), ("county", "back", "delivered"), ("county", "front", "pending")):
            db.add(
                LogoutDelivery(
                    sid=sid, client_id=client_id, channel=channel, status=status, attempts=2, last_error="HTTP 503", next_attempt_at=moment
                )
            )
    components.upgrade_database(engine)

    found = deliveries(world, sid)
    assert set(found) == {("hall", "back"), ("county", "front")}
    moved = found[("hall", "back")]
    assert (moved.status, moved.attempts, moved.last_error) == ("pending", 2, "HTTP 503")
    assert deliver(world, now=moment + timedelta(seconds=1)).delivered == 1
    claims = check_logout_token(receiver.wait_for("/city")[0], keys.jwks_dict(world.ctx), issuer=ISSUER, client_id="hall")
    assert claims["sid"] == sid and claims["sub"] == account_id
