"""Enterprises, agents and acting for an enterprise, through the real app (Flask test client) and the CLI.

The representative authorises an agent on the account page; the agent chooses to
act for the enterprise and the hall's tokens carry ``org_id``/``org_name``/
``org_role``; the agent's matters are enforced; after revocation the agent's
session stops acting, its refresh token is refused and its access token is
inactive. The enterprise's USB key (an enterprise-auth certificate from the test
CA on a SoftHSM2 token) lifts the enterprise context to level 3.
"""

from __future__ import annotations

import base64
import json
from datetime import date, timedelta
from urllib.parse import urlencode

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from core import audit
from core.models import AuditEvent
from idp.models import AgentAuthorisation, SessionActing
from idp.oidc import clients, keys
from idp.people import enterprises
from tests.certlogin.test_idp_certlogin import CB, ISSUER, World, refused
from tests.certlogin_fixtures import PASSWORD, issue, new_credit_code, query_of, signed_fields, usb_key  # noqa: F401
from tests.conftest import initialised_copy, run_hallmark


@pytest.fixture
def world(tmp_path, migrated, key_manager, usb_key):
    from ca import hierarchy
    from hallmark.app import create_app
    from tests.conftest import app_settings

    engine, _ = migrated
    app = create_app(app_settings(tmp_path, engine.url.render_as_string(hide_password=False), HALLMARK_PUBLIC_URL=ISSUER))
    services = app.extensions["hallmark.services"]
    hierarchy.init_hierarchy(services.ca, actor="test")
    w = World(app, usb_key)
    w.secret = w.hall()
    w.matter("tax-filing", 2)
    w.matter("land-transfer", 3)
    w.matter("social-insurance", 2)
    yield w
    services.close()


def signed_in(world, person):
    browser = world.browser()
    browser.page("/login")
    response = browser.client.post("/login", data={"csrf_token": browser.csrf, "identifier": person.username, "password": PASSWORD})
    assert response.status_code == 303
    browser.page("/account")
    return browser


def register(world, representative, name="闽南茶业有限公司") -> str:
    code = new_credit_code()
    with world.tx() as db:
        enterprises.add(db, credit_code=code, name=name, representative=representative.username, actor="test")
    return code


def handle_of(world, code: str) -> str:
    """How pages name an enterprise in forms (the credit code itself is masked in pages)."""
    from idp import pages

    with world.app.app_context():
        return pages.org_handle(code)


def authorize(browser, **params):
    query = {"response_type": "code", "client_id": "hall", "redirect_uri": CB, "scope": "openid profile", "state": "s", **params}
    return browser.client.get("/oauth/authorize?" + urlencode(query))


def tokens_for(world, code: str) -> dict:
    response = world.app.test_client().post(
        "/oauth/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": CB}, headers=basic(world.secret)
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def basic(secret):
    return {"Authorization": "Basic " + base64.b64encode(f"hall:{secret}".encode()).decode()}


def id_claims(world, token: dict) -> dict:
    return jwt.decode(token["id_token"], KeySet.import_key_set(keys.jwks_dict(world.ctx)), algorithms=["ES256", "RS256"]).claims


def events(world, action) -> list[dict]:
    with world.ctx.sessions() as db:
        assert audit.verify(db).ok
        return [json.loads(e.details) for e in db.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq))]


def test_representative_authorises_an_agent_who_acts_for_the_enterprise_until_revoked(world):
    boss, clerk = world.person(name="林法人"), world.person(name="陈经办")
    code = register(world, boss)
    with world.tx() as db:
        assert enterprises.is_representative(db, boss.account_id, code) and not enterprises.is_representative(db, clerk.account_id, code)
        assert not enterprises.is_representative(db, boss.account_id, "not-a-code")

    rep = signed_in(world, boss)
    page = rep.page("/account").get_data(as_text=True)
    masked = code[:6] + "*" * 8 + code[-4:]
    assert "闽南茶业有限公司" in page and masked in page and code not in page and "授权经办人" in page
    until = (date.today() + timedelta(days=90)).isoformat()
    granted = rep.client.post(
        f"/account/enterprises/{handle_of(world, code)}/agents",
        data={"csrf_token": rep.csrf, "agent": clerk.username, "matters": "tax-filing, land-transfer", "expires": until},
    )
    assert granted.status_code == 303 and granted.location == "/account?notice=agent-authorised#enterprises"
    assert clerk.username in rep.page("/account").get_data(as_text=True)
    [grant] = events(world, "idp.enterprise.agent_authorised")
    assert grant["agent"] == clerk.account_id and grant["matters"] == "tax-filing land-transfer"

    # The agent signs in; the first authorization asks for whom the session acts.
    agent = signed_in(world, clerk)
    ask = authorize(agent)
    assert ask.location.startswith("/account/act-for?")
    choice = agent.page(ask.location)
    assert choice.status_code == 200 and "闽南茶业有限公司" in choice.get_data(as_text=True) and code not in choice.get_data(as_text=True)
    chosen = agent.client.post(ask.location, data={"csrf_token": agent.csrf, "choice": handle_of(world, code)})
    assert chosen.status_code == 303
    answer = agent.client.get(chosen.location)
    token = tokens_for(world, query_of(answer.location)["code"])
    claims = id_claims(world, token)
    assert (claims["org_id"], claims["org_name"], claims["org_role"]) == (code, "闽南茶业有限公司", "agent")
    assert claims["sub"] == clerk.account_id and claims["acr"] == "urn:hallmark:loa:2"
    access = jwt.decode(token["access_token"], KeySet.import_key_set(keys.jwks_dict(world.ctx)), algorithms=["ES256", "RS256"]).claims
    assert access["org_id"] == code and access["org_role"] == "agent"
    userinfo = world.app.test_client().get("/oauth/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert userinfo.status_code == 200 and userinfo.get_json()["org_id"] == code and userinfo.get_json()["org_role"] == "agent"

    # Matters: covered ones pass; another is refused at the choice page, and with prompt=none at the hall.
    assert "code" in query_of(authorize(agent, matter="tax-filing").location)
    uncovered = authorize(agent, matter="social-insurance")
    assert uncovered.location.startswith("/account/act-for?") and query_of(uncovered.location)["matter"] == "social-insurance"
    page = agent.page(uncovered.location).get_data(as_text=True)
    assert "您的授权不包括此事项" in page and "disabled" in page
    assert agent.client.post(uncovered.location, data={"csrf_token": agent.csrf, "choice": handle_of(world, code)}).status_code == 403
    assert query_of(authorize(agent, matter="social-insurance", prompt="none").location)["error"] == "access_denied"
    assert events(world, "idp.enterprise.acting_refused")[0]["reason"] == "matter_not_covered"
    # Choosing to act for oneself, the same matter goes through without org claims.
    agent.client.post(uncovered.location, data={"csrf_token": agent.csrf, "choice": "self"})
    own = tokens_for(world, query_of(authorize(agent, matter="social-insurance").location)["code"])
    assert "org_id" not in id_claims(world, own)
    agent.client.post("/account/act-for", data={"csrf_token": agent.csrf, "choice": handle_of(world, code)})
    again = tokens_for(world, query_of(authorize(agent, matter="tax-filing").location)["code"])
    assert id_claims(world, again)["org_id"] == code

    # Revocation: the session stops acting, the refresh token is refused, the access token is inactive.
    with world.ctx.sessions() as db:
        authorisation = db.scalars(select(AgentAuthorisation)).one()
        assert db.scalar(select(SessionActing).where(SessionActing.authorisation_id == authorisation.id)) is not None
    revoked = rep.client.post(
        f"/account/enterprises/{handle_of(world, code)}/agents/{authorisation.id}/revoke", data={"csrf_token": rep.csrf}
    )
    assert revoked.status_code == 303
    assert events(world, "idp.enterprise.agent_revoked")[0]["sessions_stopped_acting"] == 1
    refresh = world.app.test_client().post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": again["refresh_token"]}, headers=basic(world.secret)
    )
    assert refresh.status_code == 400 and refresh.get_json()["error"] == "invalid_grant"
    gone = world.app.test_client().get("/oauth/userinfo", headers={"Authorization": f"Bearer {again['access_token']}"})
    assert gone.status_code == 401
    inactive = world.app.test_client().post("/oauth/introspect", data={"token": again["access_token"]}, headers=basic(world.secret))
    assert inactive.get_json() == {"active": False}
    after = authorize(agent, matter="tax-filing")
    assert "code" in query_of(after.location) and "org_id" not in id_claims(world, tokens_for(world, query_of(after.location)["code"]))
    assert agent.client.post("/account/act-for", data={"csrf_token": agent.csrf, "choice": handle_of(world, code)}).status_code == 403


def test_code_issued_while_acting_is_refused_after_revocation(world):
    boss, clerk = world.person(), world.person()
    code = register(world, boss)
    with world.tx() as db:
        authorisation = enterprises.authorise_agent(
            db, credit_code=code, representative_id=boss.account_id, agent=clerk.username, matters="*", expires_at=_days(30)
        )
    agent = signed_in(world, clerk)
    agent.client.post("/account/act-for", data={"csrf_token": agent.csrf, "choice": handle_of(world, code)})
    issued = query_of(authorize(agent).location)["code"]
    with world.tx() as db:
        enterprises.revoke_agent(db, credit_code=code, authorisation_id=authorisation.id, by_account=boss.account_id)
    late = world.app.test_client().post(
        "/oauth/token", data={"grant_type": "authorization_code", "code": issued, "redirect_uri": CB}, headers=basic(world.secret)
    )
    assert late.status_code == 400 and late.get_json()["error"] == "invalid_grant"


def _days(n):
    from core.db import utc_now

    return utc_now() + timedelta(days=n)


def test_enterprise_usb_key_lifts_the_enterprise_context_to_level_3_and_only_it(world):
    boss, stranger = world.person(), world.person()
    code = register(world, boss, name="厦门海运集团")
    signer = world.usb.new_key()
    _, certificate = issue(world.ca, "enterprise-auth", signer, code, name="厦门海运集团")

    # Without a personal session the enterprise key is not enough; nor from someone who neither represents nor acts for it.
    nobody = world.browser()
    refused(nobody.login_with(signer, certificate), "enterprise_needs_person", 401)
    other = signed_in(world, stranger)
    refused(other.login_with(signer, certificate, purpose="enterprise"), "not_representative_or_agent", 403)

    rep = signed_in(world, boss)
    ask = authorize(rep, matter="land-transfer")
    assert ask.location.startswith("/account/act-for?")
    page = rep.page(ask.location).get_data(as_text=True)
    assert 'data-purpose="enterprise"' in page and "使用企业 USB Key" in page
    done = rep.login_with(signer, certificate, next_url=query_of(ask.location)["next"], purpose="enterprise")
    assert done.status_code == 200, done.get_data(as_text=True)
    assert world.session_of(rep).amr == "pwd"  # the person's own session did not gain hwk
    answer = rep.client.get(done.get_json()["redirect"])
    claims = id_claims(world, tokens_for(world, query_of(answer.location)["code"]))
    assert claims["acr"] == "urn:hallmark:loa:3" and "hwk" in claims["amr"]
    assert (claims["org_id"], claims["org_role"]) == (code, "representative")

    # Acting for oneself, the same level-3 matter needs the person's own certificate.
    rep.client.post("/account/act-for", data={"csrf_token": rep.csrf, "choice": "self"})
    assert authorize(rep, matter="land-transfer").location.startswith("/login/step-up?")
    bindings = [b for b in world.bindings() if b.kind == "enterprise"]
    assert [b.account_id for b in bindings] == [boss.account_id]


def test_bad_input_is_refused_and_nothing_half_written(world):
    boss, clerk, unverified = world.person(), world.person(), world.person(proofed=False)
    code = register(world, boss)
    with world.tx() as db:
        for kwargs, reason in (
            (
                {"credit_code": code[:-1] + ("0" if code[-1] != "0" else "1"), "name": "x", "representative": boss.username},
                "bad_credit_code",
            ),
            ({"credit_code": new_credit_code(), "name": "x", "representative": unverified.username}, "representative_not_proofed"),
            ({"credit_code": new_credit_code(), "name": "x", "representative": "nobody-here"}, "no_representative"),
            ({"credit_code": code, "name": "x", "representative": boss.username}, "enterprise_exists"),
            ({"credit_code": new_credit_code(), "name": "", "representative": boss.username}, "bad_name"),
        ):
            with pytest.raises(enterprises.EnterpriseRefusal) as caught:
                enterprises.add(db, actor="test", **kwargs)
            assert caught.value.code == reason
        assert len(enterprises.all_enterprises(db)) == 1

    rep = signed_in(world, boss)
    until = (date.today() + timedelta(days=10)).isoformat()
    for data, status, text in (
        ({"agent": clerk.username, "matters": "no-such-matter", "expires": until}, 400, "不在事项目录中"),
        ({"agent": unverified.username, "all_matters": "1", "expires": until}, 422, "尚未实名认证"),
        ({"agent": clerk.username, "all_matters": "1", "expires": "2001-01-01"}, 400, "截止日期"),
        ({"agent": clerk.username, "all_matters": "1", "expires": "next week"}, 400, "YYYY-MM-DD"),
        ({"agent": boss.username, "all_matters": "1", "expires": until}, 400, "无需授权"),
    ):
        response = rep.client.post(f"/account/enterprises/{handle_of(world, code)}/agents", data={"csrf_token": rep.csrf, **data})
        assert response.status_code == status and text in response.get_data(as_text=True), (data, response.status_code)
    agent = signed_in(world, clerk)
    assert (
        agent.client.post(
            f"/account/enterprises/{handle_of(world, code)}/agents",
            data={"csrf_token": agent.csrf, "agent": clerk.username, "all_matters": "1", "expires": until},
        ).status_code
        == 403
    )
    assert (
        agent.client.post(f"/account/enterprises/{handle_of(world, code)}/agents/x/revoke", data={"csrf_token": agent.csrf}).status_code
        == 403
    )
    with world.ctx.sessions() as db:
        assert db.scalars(select(AgentAuthorisation)).all() == []


def test_staff_json_api(world):
    boss = world.person()
    with world.tx() as db:
        secret = clients.add(
            world.ctx,
            db,
            client_id="console",
            actor="test",
            name="Console",
            client_type="confidential",
            grant_types=["client_credentials"],
            scopes=[enterprises.STAFF_SCOPE],
        ).client_secret
        other = clients.add(
            world.ctx,
            db,
            client_id="other",
            actor="test",
            name="Other",
            client_type="confidential",
            grant_types=["client_credentials"],
            scopes=["ca:read"],
        ).client_secret

    def token(client_id, client_secret, scope):
        auth = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        return (
            world.app.test_client()
            .post("/oauth/token", data={"grant_type": "client_credentials", "scope": scope}, headers={"Authorization": auth})
            .get_json()["access_token"]
        )

    api = world.app.test_client()
    staff = {"Authorization": f"Bearer {token('console', secret, enterprises.STAFF_SCOPE)}"}
    code = new_credit_code()
    body = {"credit_code": code, "name": "福州软件园", "representative": boss.username}
    assert api.post("/api/idp/enterprises", json=body).status_code == 401
    # a token for the CA API (the default audience of a ca:read token) is not for this API
    elsewhere = api.post("/api/idp/enterprises", json=body, headers={"Authorization": f"Bearer {token('other', other, 'ca:read')}"})
    assert elsewhere.status_code == 401 and 'error="invalid_token"' in elsewhere.headers["WWW-Authenticate"]
    created = api.post("/api/idp/enterprises", json=body, headers=staff)
    assert created.status_code == 201 and created.get_json()["credit_code"] == code and created.headers["Location"].endswith(code)
    assert api.post("/api/idp/enterprises", json=body, headers=staff).status_code == 409
    bad = api.post("/api/idp/enterprises", json={**body, "credit_code": "91350100M000100Y44"}, headers=staff)
    assert bad.status_code == 400 and bad.mimetype == "application/problem+json" and bad.get_json()["code"] == "bad_credit_code"
    assert api.post("/api/idp/enterprises", json=["x"], headers=staff).status_code == 400
    assert [e["credit_code"] for e in api.get("/api/idp/enterprises", headers=staff).get_json()["enterprises"]] == [code]
    one = api.get(f"/api/idp/enterprises/{code}", headers=staff).get_json()
    assert one["representative"]["account_id"] == boss.account_id and one["agents"] == []
    assert api.get("/api/idp/enterprises/91350100M000100Y43", headers=staff).status_code == 404
    assert events(world, "idp.enterprise.added")[0]["representative"] == boss.account_id


def test_cli_enterprise_add_and_list(tmp_path):
    from core.identifiers import generate_resident_id

    instance = tmp_path / "instance"
    initialised_copy(instance)
    for args in (("--username", "clerk1", "--role", "clerk"), ("--username", "boss1")):
        result = run_hallmark(instance, "idp", "account", "add", *args)
        assert result.returncode == 0, result.stderr
    resident = generate_resident_id("350102", date(1970, 5, 1), 123)
    verified = run_hallmark(
        instance,
        "idp",
        "verify-at-counter",
        "--account",
        "boss1",
        "--resident-id",
        resident,
        "--name",
        "林总",
        "--clerk",
        "clerk1",
        "--location",
        "福州市行政服务中心",
        "--document",
        "resident-card",
    )
    assert verified.returncode == 0, verified.stderr
    code = new_credit_code()
    added = run_hallmark(
        instance, "idp", "enterprise", "add", "--credit-code", code, "--name", "福州茉莉花茶厂", "--representative", "boss1"
    )
    assert added.returncode == 0 and "boss1" in added.stdout and code not in added.stdout, added.stderr
    bad = run_hallmark(
        instance, "idp", "enterprise", "add", "--credit-code", "91350100M000100Y44", "--name", "x", "--representative", "boss1"
    )
    assert bad.returncode == 1 and "not a valid unified social credit code" in bad.stderr
    unverified = run_hallmark(
        instance, "idp", "enterprise", "add", "--credit-code", new_credit_code(), "--name", "x", "--representative", "clerk1"
    )
    assert unverified.returncode == 1 and "not real-name verified" in unverified.stderr
    listed = run_hallmark(instance, "idp", "enterprise", "list")
    assert "福州茉莉花茶厂" in listed.stdout and code[:6] in listed.stdout and code not in listed.stdout
    as_json = json.loads(run_hallmark(instance, "idp", "enterprise", "list", "--json").stdout)
    assert as_json[0]["credit_code"] == code and as_json[0]["agents"] == []
