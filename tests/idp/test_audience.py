"""Audience-bound access tokens: RFC 8707 resource indicators at the token endpoint, ``aud`` checked by every JSON API.

Through the real app factory (Flask test client): the CA API and the signing API
refuse a token whose ``aud`` names another resource (401 ``invalid_token`` with a
``WWW-Authenticate`` error, RFC 6750) and accept one for themselves; the token
endpoint answers ``invalid_target`` for a resource a client may not ask for; the
authorization code and refresh token carry what the authorization request was
granted; clients are registered with their resources through the CLI (in-process).
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner
from joserfc import jwt

from idp.oidc import clients, keys
from tests.conftest import USER_PIN, app_settings
from tests.idp.test_idp_oidc_protocol import CB, ISSUER, World, basic, query_of

CA_API = ISSUER + "/api/ca"
SIGN_API = ISSUER + "/api/sign"
IDP_API = ISSUER + "/api/idp"
LICENCES_API = ISSUER + "/api/licences"
ELSEWHERE = "https://licences.example/api/v1"


@pytest.fixture
def world(tmp_path, migrated, key_manager):
    from hallmark.app import create_app

    engine, _ = migrated
    app = create_app(app_settings(tmp_path, engine.url.render_as_string(hide_password=False), HALLMARK_PUBLIC_URL=ISSUER))
    yield World(app)
    app.extensions["hallmark.services"].close()


def approval_system(world: World, client_id="approval", **kw) -> str:
    """A client_credentials client holding CA and signing scopes."""
    kw.setdefault("scopes", ["ca:read", "sign:validate"])
    return world.client(client_id, redirect_uris=[], grant_types=["client_credentials"], first_party=False, **kw)


def token_answer(world: World, client_id: str, secret: str, **form):
    data = {"grant_type": "client_credentials", **form}
    return world.rp.post("/oauth/token", data=data, headers=basic(client_id, secret))


def access_token(world: World, client_id: str, secret: str, **form) -> str:
    answer = token_answer(world, client_id, secret, **form)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["access_token"]


def audience(world: World, token: str) -> list[str]:
    aud = jwt.decode(token, keys.keyset(world.ctx)).claims["aud"]
    return [aud] if isinstance(aud, str) else aud


def ca_list(world: World, token: str):
    return world.rp.get("/api/ca/certificates", headers={"Authorization": f"Bearer {token}"})


def validate(world: World, token: str):
    # Not a PDF: an API that accepts the token answers 415, one that refuses it 401.
    return world.rp.post("/api/validate", data=b"hello", headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})


def assert_refused_for_audience(response, api: str):
    assert response.status_code == 401 and response.mimetype == "application/problem+json"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    assert "error_description=" in challenge and api in challenge
    assert api in response.get_json()["detail"]


def test_a_token_for_another_resource_is_refused_by_the_ca_and_signing_apis(world):
    secret = approval_system(world)
    for_ca = access_token(world, "approval", secret, resource=CA_API)
    for_signing = access_token(world, "approval", secret, resource=SIGN_API)
    assert audience(world, for_ca) == [CA_API] and audience(world, for_signing) == [SIGN_API]

    assert ca_list(world, for_ca).status_code == 200
    assert_refused_for_audience(validate(world, for_ca), SIGN_API)
    assert validate(world, for_signing).status_code == 415
    assert_refused_for_audience(ca_list(world, for_signing), CA_API)

    # both resources at once: both accept it
    both = access_token(world, "approval", secret, resource=[CA_API, SIGN_API])
    assert audience(world, both) == [CA_API, SIGN_API]
    assert ca_list(world, both).status_code == 200 and validate(world, both).status_code == 415


def test_without_a_resource_the_audience_follows_the_scopes(world):
    secret = approval_system(world)
    default = access_token(world, "approval", secret)
    assert audience(world, default) == [CA_API, SIGN_API]
    assert ca_list(world, default).status_code == 200 and validate(world, default).status_code == 415
    ca_only = access_token(world, "approval", secret, scope="ca:read")
    assert audience(world, ca_only) == [CA_API]
    assert_refused_for_audience(validate(world, ca_only), SIGN_API)
    # what the introspection endpoint reports
    assert world.introspect(ca_only, "approval", secret)["aud"] == CA_API


def test_a_token_signed_by_the_provider_for_its_own_userinfo_is_refused_by_the_apis(world):
    secret = approval_system(world)
    for_provider = access_token(world, "approval", secret, resource=ISSUER)
    assert audience(world, for_provider) == [ISSUER]
    assert_refused_for_audience(ca_list(world, for_provider), CA_API)
    assert_refused_for_audience(validate(world, for_provider), SIGN_API)


@pytest.mark.parametrize(
    "resource, why",
    [
        ("api/ca", "absolute"),
        (CA_API + "#frag", "fragment"),
        ("urn:hallmark:ca", "absolute http(s)"),
        ("https://user@id.test/api/ca", "user information"),
        ("https://id.test/api/ca\u00e9", "printable ASCII"),
        (IDP_API, "may not ask"),  # an API of this instance that serves none of its scopes
        ("https://other.example/api", "may not ask"),
        (CA_API + "/", "may not ask"),  # compared as exact strings
    ],
)
def test_invalid_target(world, resource, why):
    secret = approval_system(world)
    # a single resource goes through the fast path first, two through Authlib: the same answer
    for form in ({"resource": resource}, {"resource": [CA_API, resource]}):
        answer = token_answer(world, "approval", secret, **form)
        assert answer.status_code == 400, answer.get_json()
        assert answer.get_json()["error"] == "invalid_target" and why in answer.get_json()["error_description"]
        assert answer.headers["Cache-Control"] == "no-store"


def test_registered_resources_are_all_a_client_may_ask_for(world):
    secret = approval_system(world, resources=[ELSEWHERE, SIGN_API])
    assert token_answer(world, "approval", secret, resource=CA_API).get_json()["error"] == "invalid_target"
    assert audience(world, access_token(world, "approval", secret, resource=ELSEWHERE)) == [ELSEWHERE]
    # by default: the registered ones that serve its scopes, and any outside this instance
    default = access_token(world, "approval", secret)
    assert audience(world, default) == [ELSEWHERE, SIGN_API]
    assert_refused_for_audience(ca_list(world, default), CA_API)
    with world.tx() as db:
        clients.set_resources(world.ctx, db, "approval", None, actor="test")
    assert audience(world, access_token(world, "approval", secret)) == [CA_API, SIGN_API]


def test_discovery_and_resource_metadata(world):
    meta = world.rp.get("/.well-known/openid-configuration").get_json()
    assert set(meta["protected_resources"]) == {ISSUER, CA_API, SIGN_API, IDP_API, LICENCES_API}
    ca = world.rp.get("/.well-known/oauth-protected-resource/api/ca").get_json()
    assert ca["resource"] == CA_API and ca["authorization_servers"] == [ISSUER]
    assert set(ca["scopes_supported"]) == {"ca:issue", "ca:read", "ca:revoke"}
    assert world.rp.get("/.well-known/oauth-protected-resource").get_json()["resource"] == ISSUER
    assert world.rp.get("/.well-known/oauth-protected-resource/api/nothing").status_code == 404


def test_a_client_registered_before_the_upgrade_keeps_working(tmp_path):
    """A database at the previous release's revision (0007) with an approval system: after the upgrade its
    resources are unset, so it gets tokens for the APIs its scopes are for, and only those accept them."""
    from alembic import command
    from sqlalchemy import text

    from core import db
    from hallmark import components
    from hallmark.app import create_app

    engine = db.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    command.upgrade(db._alembic_config(engine, components.migration_locations()), "0007")
    secret = "an-old-secret-0123456789"
    with engine.begin() as connection:
        connection.execute(
            text(
                "insert into idp_clients (client_id, name, client_type, secret_hash, token_endpoint_auth_method, redirect_uris,"
                " grant_types, scope, min_acr, first_party, post_logout_redirect_uris, created_at)"
                " values ('old-approval', 'Old approval system', 'confidential', :hash, 'client_secret_basic', '[]',"
                " 'client_credentials', 'ca:read', 1, 0, '[]', '2026-11-30 08:00:00')"
            ),
            {"hash": clients.secret_hash(b"test-secret-key-0123456789", "old-approval", secret)},
        )
    components.upgrade_database(engine)
    with engine.connect() as connection:
        assert connection.execute(text("select resources from idp_clients")).scalar_one() is None
    engine.dispose()

    app = create_app(app_settings(tmp_path, f"sqlite:///{tmp_path / 'old.db'}", HALLMARK_PUBLIC_URL=ISSUER))
    try:
        old = World(app)
        token = access_token(old, "old-approval", secret)
        assert audience(old, token) == [CA_API]
        assert ca_list(old, token).status_code == 200
        assert_refused_for_audience(validate(old, token), SIGN_API)
        assert token_answer(old, "old-approval", secret, resource=SIGN_API).get_json()["error"] == "invalid_target"
    finally:
        app.extensions["hallmark.services"].close()


# -- the code flow: resources of the authorization request, narrowed at the token endpoint --------------------


def authorize(world: World, **params):
    """World.authorize, with repeatable parameters (a list is sent as one parameter per value)."""
    query = {"response_type": "code", "client_id": "hall", "redirect_uri": CB, "state": "st-1", **params}
    return world.browser.get("/oauth/authorize?" + urlencode(query, doseq=True))


def new_code(world: World, **params) -> str:
    response = authorize(world, **params)
    assert response.status_code == 302, response.get_data(as_text=True)
    answer = query_of(response.location)
    assert "code" in answer, answer
    return answer["code"]


def code_flow_world(world: World) -> str:
    secret = world.client(scopes=["openid", "profile", "cert:enrol"])
    world.login(world.account())
    return secret


def exchange(world: World, secret: str, code: str, **form):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": CB, **form}
    return world.rp.post("/oauth/token", data=data, headers=basic("hall", secret))


def test_code_flow_resources(world):
    secret = code_flow_world(world)
    # without resources: userinfo (openid) and the API its scopes are for
    plain = exchange(world, secret, new_code(world, scope="openid cert:enrol")).get_json()
    assert audience(world, plain["access_token"]) == [ISSUER, IDP_API]
    # asked for in the authorization request: the token is for that, and its refresh tokens stay within it
    granted = exchange(world, secret, new_code(world, scope="openid cert:enrol", resource=IDP_API)).get_json()
    assert audience(world, granted["access_token"]) == [IDP_API]
    userinfo = world.rp.get("/oauth/userinfo", headers={"Authorization": "Bearer " + granted["access_token"]})
    assert userinfo.status_code == 401 and 'error="invalid_token"' in userinfo.headers["WWW-Authenticate"]
    refresh = {"grant_type": "refresh_token", "refresh_token": granted["refresh_token"], "resource": ISSUER}
    widened = world.rp.post("/oauth/token", data=refresh, headers=basic("hall", secret))
    assert widened.status_code == 400 and widened.get_json()["error"] == "invalid_target"
    # the refused request did not use up the refresh token
    refresh.pop("resource")
    again = world.rp.post("/oauth/token", data=refresh, headers=basic("hall", secret))
    assert again.status_code == 200 and audience(world, again.get_json()["access_token"]) == [IDP_API]


def test_code_exchange_narrows_and_refuses_before_using_the_code(world):
    secret = code_flow_world(world)
    code = new_code(world, scope="openid cert:enrol", resource=[ISSUER, IDP_API])
    refused = exchange(world, secret, code, resource=CA_API)
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_target"
    narrowed = exchange(world, secret, code, resource=ISSUER)
    assert narrowed.status_code == 200 and audience(world, narrowed.get_json()["access_token"]) == [ISSUER]


def test_authorization_request_refuses_a_resource_it_may_not_have(world):
    code_flow_world(world)
    for resource in (CA_API, "not a uri"):
        response = authorize(world, scope="openid", resource=resource)
        assert response.status_code == 302
        answer = query_of(response.location)
        assert answer["error"] == "invalid_target" and answer["state"] == "st-1"


def test_resources_survive_login_and_consent(world):
    """The authorization request goes through the login page and back: its resources come with it."""
    world.client(scopes=["openid", "cert:enrol"])
    response = authorize(world, scope="openid cert:enrol", resource=[ISSUER, IDP_API])
    assert response.status_code == 302 and response.location.startswith("/login")
    next_url = query_of(response.location)["next"]
    assert next_url.count("resource=") == 2


# -- registration through the CLI (in-process) ------------------------------------------------------------------


def run_cli(tmp_path, database_url: str, *args: str):
    from hallmark.cli import main

    pins = tmp_path / "cli-pins.json"
    pins.write_text(json.dumps({"user_pin": USER_PIN}))
    env = {
        "HALLMARK_INSTANCE": str(tmp_path / "cli-instance"),
        "HALLMARK_DATABASE_URL": database_url,
        "HALLMARK_PIN_SOURCE": f"file:{pins}",
        "HALLMARK_PUBLIC_URL": ISSUER,
        "HALLMARK_LOOKUP_KEY": "test-lookup-key-0123456789",
        "HALLMARK_SECRET_KEY": "test-secret-key-0123456789",
    }
    from tests.conftest import TOKEN_LABEL

    env["HALLMARK_TOKEN_LABEL"] = TOKEN_LABEL
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_cli_registers_shows_and_changes_resources(tmp_path, migrated):
    engine, _ = migrated
    url = engine.url.render_as_string(hide_password=False)
    base = ("idp", "client", "add", "--name", "审批系统", "--client-id", "approval", "--grant", "client_credentials", "--scope", "ca:read")
    added = run_cli(tmp_path, url, *base, "--resource", CA_API, "--resource", ELSEWHERE, "--json")
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["resources"] == [CA_API, ELSEWHERE]

    shown = run_cli(tmp_path, url, "idp", "client", "show", "approval", "--json")
    assert json.loads(shown.output)["resources"] == [CA_API, ELSEWHERE]
    text = run_cli(tmp_path, url, "idp", "client", "show", "approval").output
    assert f"{'resources':<20} {CA_API} {ELSEWHERE}" in text
    listed = run_cli(tmp_path, url, "idp", "client", "list").output
    assert f"resource {CA_API}" in listed and f"resource {ELSEWHERE}" in listed
    assert json.loads(run_cli(tmp_path, url, "idp", "client", "list", "--json").output)[0]["resources"] == [CA_API, ELSEWHERE]

    bad = run_cli(
        tmp_path, url, *base[:5], "--client-id", "other", "--grant", "client_credentials", "--scope", "ca:read", "--resource", "x#y"
    )
    assert bad.exit_code == 1 and "fragment" in bad.output
    assert "other" not in run_cli(tmp_path, url, "idp", "client", "list").output

    changed = run_cli(tmp_path, url, "idp", "client", "resources", "approval", "--resource", SIGN_API)
    assert changed.exit_code == 0 and SIGN_API in changed.output
    assert json.loads(run_cli(tmp_path, url, "idp", "client", "show", "approval", "--json").output)["resources"] == [SIGN_API]
    default = run_cli(tmp_path, url, "idp", "client", "resources", "approval", "--default")
    assert default.exit_code == 0 and "default" in default.output
    assert json.loads(run_cli(tmp_path, url, "idp", "client", "show", "approval", "--json").output)["resources"] is None
    # without --resource: the default, said so in words
    plain = run_cli(tmp_path, url, *base[:5], "--client-id", "plain", "--grant", "client_credentials", "--scope", "sign:seal")
    assert plain.exit_code == 0 and "resources      (default: this instance's APIs that serve one of its scopes)" in plain.output
