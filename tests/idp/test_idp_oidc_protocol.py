"""The OpenID provider's protocol rules through the real app (Flask test client), on SQLite and PostgreSQL.

Real HTTP with an independent relying-party library is in ``test_idp_oidc_http.py``;
here every branch of the authorization and token endpoints is walked quickly on
both databases: levels and step-up, prompt, max_age, consent, PKCE, replayed
codes and refresh tokens, introspection, revocation, userinfo, private_key_jwt.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy import select

from core import audit
from core import db as core_db
from core.models import AuditEvent
from idp.models import Account, AuthorizationCode, IdentityProofing, Matter, RefreshToken, SSOSession
from idp.oidc import authorization, clients, keys, tokens
from idp.people import sessions

ISSUER = "https://id.test"
CB = "https://hall.test/cb"
CB2 = "https://county.test/cb"


@pytest.fixture
def oidc(tmp_path, migrated, key_manager):
    from hallmark.app import create_app
    from tests.conftest import app_settings

    engine, _ = migrated
    app = create_app(app_settings(tmp_path, engine.url.render_as_string(hide_password=False), HALLMARK_PUBLIC_URL=ISSUER))
    yield World(app)
    app.extensions["hallmark.services"].close()


class World:
    """The app, its IdP context, a browser (test client with cookies) and helpers."""

    def __init__(self, app):
        self.app = app
        self.ctx = app.extensions["hallmark.services"].idp
        self.browser = app.test_client()
        self.rp = app.test_client()  # back-channel calls: no cookies

    def tx(self):
        return core_db.transaction(self.ctx.sessions)

    def client(self, client_id="hall", **kw) -> str | None:
        kw.setdefault("name", f"Hall {client_id}")
        kw.setdefault("client_type", "confidential")
        kw.setdefault("redirect_uris", [CB])
        kw.setdefault("scopes", ["openid", "profile", tokens.REALNAME_SCOPE])
        kw.setdefault("first_party", True)
        with self.tx() as db:
            return clients.add(self.ctx, db, client_id=client_id, actor="test", **kw).client_secret

    def account(self, name="zhang", *, proofed=False) -> str:
        now = datetime.now(UTC)
        account_id = str(uuid.uuid4())
        with self.tx() as db:
            db.add(
                Account(
                    id=account_id, username=name, display_name=f"{name} display", password_hash="x", created_at=now, password_changed_at=now
                )
            )
            if proofed:
                db.flush()
                db.add(
                    IdentityProofing(
                        account_id=account_id,
                        resident_id_hash=secrets.token_hex(32),
                        resident_id_masked="110***********002X",
                        legal_name="张三",
                        method="registry",
                        source="test",
                        verified_at=now,
                    )
                )
        return account_id

    def login(self, account_id, *, amr=frozenset({"pwd"}), auth_time: datetime | None = None) -> str:
        with self.tx() as db:
            row = sessions.start(db, db.get(Account, account_id), set(amr))
            if auth_time is not None:
                row.auth_time = auth_time
            sid, cookie = row.sid, sessions.cookie_value(self.ctx.secret_key, row.sid, row.secret)
        self.browser.set_cookie(sessions.COOKIE, cookie, domain="localhost")
        return sid

    def authorize(self, client_id="hall", redirect_uri=CB, verifier=None, **params):
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid profile",
            "state": "st-1",
            **params,
        }
        if verifier:
            query.setdefault("code_challenge", pkce(verifier))
            query.setdefault("code_challenge_method", "S256")
        query = {k: v for k, v in query.items() if v is not None}
        return self.browser.get("/oauth/authorize?" + urlencode(query))

    def code(self, **params) -> str:
        response = self.authorize(**params)
        assert response.status_code == 302, response.get_data(as_text=True)
        answer = query_of(response.location)
        assert "code" in answer, answer
        return answer["code"]

    def token(self, data, client_id="hall", secret=None, **kw):
        headers = {}
        if secret is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        return self.rp.post("/oauth/token", data=data, headers=headers, **kw)

    def introspect(self, token, client_id, secret, **extra):
        return self.rp.post("/oauth/introspect", data={"token": token, **extra}, headers=basic(client_id, secret)).get_json()


def basic(client_id, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def pkce(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def query_of(location: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def decode(world, token):
    return jwt.decode(token, KeySet.import_key_set(keys.jwks_dict(world.ctx)), algorithms=["ES256", "RS256"])


def audit_actions(world) -> list[str]:
    with world.ctx.sessions() as db:
        assert audit.verify(db).ok
        return [e.action for e in db.scalars(select(AuditEvent).order_by(AuditEvent.seq))]


VERIFIER = "v" * 20 + secrets.token_urlsafe(32)


# -- discovery and keys ------------------------------------------------------------------------


def test_discovery_and_jwks(oidc):
    from authlib.oidc.discovery import OpenIDProviderMetadata

    meta = oidc.rp.get("/.well-known/openid-configuration").get_json()
    OpenIDProviderMetadata(meta).validate()
    assert meta["issuer"] == ISSUER and meta["jwks_uri"] == ISSUER + "/jwks.json"
    assert meta["acr_values_supported"] == ["urn:hallmark:loa:1", "urn:hallmark:loa:2", "urn:hallmark:loa:3"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True and meta["claims_parameter_supported"] is True
    assert set(meta["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post", "private_key_jwt", "none"}
    assert set(meta["grant_types_supported"]) == {
        "authorization_code",
        "refresh_token",
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:device_code",
    }
    assert meta["device_authorization_endpoint"] == ISSUER + "/oauth/device_authorization"
    assert meta["end_session_endpoint"] == ISSUER + "/oauth/logout"
    assert meta["backchannel_logout_supported"] is True and meta["backchannel_logout_session_supported"] is True
    assert meta["frontchannel_logout_supported"] is True and meta["frontchannel_logout_session_supported"] is True
    published = oidc.rp.get("/jwks.json").get_json()["keys"]
    assert {k["alg"] for k in published} == {"ES256", "RS256"}
    for key in published:
        assert "d" not in key and "p" not in key
        imported = (ECKey if key["kty"] == "EC" else RSAKey).import_key(key)
        assert imported.thumbprint() == key["kid"]  # kid is the RFC 7638 thumbprint


def test_rs256_and_es256_tokens_verify_against_the_published_keys(oidc):
    for alg in ("ES256", "RS256"):
        token = keys.sign(oidc.ctx, {"iss": ISSUER, "x": "数"}, alg=alg)
        decoded = decode(oidc, token)
        assert decoded.header["alg"] == alg and decoded.header["kid"] == keys.active(oidc.ctx, alg).kid
        assert decoded.claims["x"] == "数"


def test_rotation_publishes_first_then_signs_and_retires_after_tokens_expire(oidc):
    keys.jwks_dict(oidc.ctx)  # first use makes the keys
    old = keys.active(oidc.ctx, "ES256").kid
    now = datetime.now(UTC).replace(microsecond=0)
    with oidc.tx() as db:
        rotation = keys.rotate(oidc.ctx, db, "ES256", actor="test", now=now)
    new = rotation.new_kid
    published = {k["kid"] for k in keys.jwks_dict(oidc.ctx)["keys"]}
    assert {old, new} <= published
    assert keys.active(oidc.ctx, "ES256").kid == old  # the new key waits until every cache has seen it
    with oidc.ctx.sessions() as db:
        rows = keys.all_rows(db)
    later = now + keys.PROPAGATION
    assert keys.choose_active(rows, "ES256", later).kid == new
    retired = next(r for r in rows if r.kid == old)
    assert retired.publish_until >= later + keys.LONGEST_SIGNED_TOKEN
    assert old in {r.kid for r in keys.published(rows, retired.publish_until - timedelta(seconds=1))}
    assert old not in {r.kid for r in keys.published(rows, retired.publish_until)}
    with oidc.tx() as db:
        keys.rotate(oidc.ctx, db, "ES256", actor="test", immediately=True)
    assert keys.active(oidc.ctx, "ES256").kid not in (old, new)
    assert audit_actions(oidc).count("idp.signing_key.rotated") == 2


# -- clients -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"redirect_uris": ["http://hall.example/cb"]}, "plain http"),
        ({"redirect_uris": ["https://hall.example/cb#frag"]}, "fragment"),
        ({"redirect_uris": ["/relative"]}, "absolute"),
        ({"redirect_uris": ["https://user:pw@hall.example/cb"]}, "user information"),
        ({"client_type": "public", "grant_types": ["client_credentials"], "redirect_uris": []}, "public client"),
        ({"auth_method": "private_key_jwt"}, "--jwks"),
        ({"min_acr": 4}, "minimum level"),
        ({"scopes": ['bad"scope']}, "not acceptable"),
    ],
)
def test_client_registration_refuses_bad_settings(oidc, kw, message):
    with pytest.raises(clients.ClientError) as caught:
        oidc.client("bad", **kw)
    assert message in str(caught.value)


def test_client_secret_is_a_keyed_hash_and_removal_takes_everything(oidc):
    secret = oidc.client("hall")
    assert oidc.client("public-app", client_type="public") is None
    with oidc.ctx.sessions() as db:
        from idp.models import Client

        row = db.get(Client, "hall")
        assert secret not in row.secret_hash and len(row.secret_hash) == 64
    registered = clients.get(oidc.ctx, "hall")
    assert registered.check_client_secret(secret) and not registered.check_client_secret(secret + "x")
    assert clients.get(oidc.ctx, "public-app").check_endpoint_auth_method("none", "token")
    assert not registered.check_endpoint_auth_method("none", "token")
    account = oidc.account()
    oidc.login(account)
    code = oidc.code()
    tokens_ = oidc.token({"grant_type": "authorization_code", "code": code, "redirect_uri": CB}, "hall", secret).get_json()
    with oidc.tx() as db:
        clients.remove(oidc.ctx, db, "hall", actor="test")
    assert clients.get(oidc.ctx, "hall") is None
    with oidc.ctx.sessions() as db:
        assert db.scalars(select(RefreshToken)).all() == []
    gone = oidc.rp.post("/oauth/introspect", data={"token": tokens_["access_token"]}, headers=basic("public-app", "x"))
    assert gone.status_code == 401
    assert "idp.client.added" in audit_actions(oidc) and "idp.client.removed" in audit_actions(oidc)


# -- the authorization endpoint: errors before and after the client is trusted ---------------------


@pytest.mark.parametrize(
    "params, text",
    [
        ({"client_id": "nobody"}, "not registered with this service"),
        ({"redirect_uri": "https://evil.test/cb"}, "not registered for this application"),
        ({"redirect_uri": CB + "/"}, "not registered for this application"),  # exact match, not prefix
        ({"redirect_uri": None}, "redirect_uri is missing"),
        ({"client_id": None}, "client_id is missing"),
        ({"client_id": "x" * 70}, "too long"),
    ],
)
def test_untrusted_client_or_redirect_gets_a_page_never_a_redirect(oidc, params, text):
    oidc.client()
    response = oidc.authorize(**params)
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert "Location" not in response.headers
    assert "无法处理此登录请求" in response.get_data(as_text=True)  # Chinese by default
    english = oidc.authorize(**params, lang="en")
    assert english.status_code == 400 and text in english.get_data(as_text=True)
    assert response.headers["X-Frame-Options"] == "DENY"


def test_repeated_client_id_is_a_page(oidc):
    oidc.client()
    response = oidc.browser.get(f"/oauth/authorize?client_id=hall&client_id=hall&redirect_uri={CB}&response_type=code&scope=openid")
    assert response.status_code == 400 and "Location" not in response.headers


@pytest.mark.parametrize(
    "params, error",
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "invalid_request"),
        ({"scope": "openid admin"}, "invalid_scope"),
        ({"code_challenge": pkce("x" * 50), "code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": pkce("x" * 50), "code_challenge_method": None}, "invalid_request"),  # default would be plain
        ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
        ({"prompt": "none login"}, "invalid_request"),
        ({"prompt": "bogus"}, "invalid_request"),
        ({"max_age": "-1"}, "invalid_request"),
        ({"claims": "{not json"}, "invalid_request"),
        ({"matter": "no-such-matter"}, "invalid_request"),
        ({"request": "eyJ..."}, "request_not_supported"),
        ({"nonce": "n" * 201}, "invalid_request"),
        (
            {"claims": json.dumps({"id_token": {"acr": {"essential": True, "values": ["urn:other:high"]}}})},
            "unmet_authentication_requirements",
        ),
    ],
)
def test_bad_requests_go_back_to_the_client_with_state_and_iss(oidc, params, error):
    oidc.client()
    response = oidc.authorize(**params)
    assert response.status_code == 302
    assert response.location.startswith(CB + "?")
    answer = query_of(response.location)
    assert answer["error"] == error and answer["state"] == "st-1" and answer["iss"] == ISSUER


def test_repeated_parameter_is_invalid_request(oidc):
    oidc.client()
    response = oidc.browser.get(f"/oauth/authorize?client_id=hall&redirect_uri={CB}&response_type=code&scope=openid&scope=profile&state=s")
    assert query_of(response.location)["error"] == "invalid_request"
    odd = oidc.browser.get(
        f"/oauth/authorize?client_id=hall&redirect_uri={CB}&response_type=code&scope=openid&%E5%8F%82%22=1&%E5%8F%82%22=2"
    )
    description = query_of(odd.location)["error_description"]
    assert all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in description)


def test_public_clients_must_use_pkce(oidc):
    oidc.client("app", client_type="public")
    account = oidc.account()
    oidc.login(account)
    refused = query_of(oidc.authorize("app").location)
    assert refused["error"] == "invalid_request" and "PKCE" in refused["error_description"]
    code = oidc.code(client_id="app", verifier=VERIFIER)
    missing = oidc.token({"grant_type": "authorization_code", "code": code, "redirect_uri": CB, "client_id": "app"})
    assert missing.status_code == 400 and missing.get_json()["error"] == "invalid_request"
    wrong = oidc.token(
        {"grant_type": "authorization_code", "code": code, "redirect_uri": CB, "client_id": "app", "code_verifier": "w" * 50}
    )
    assert wrong.status_code == 400 and wrong.get_json()["error"] == "invalid_grant"
    good = oidc.token({"grant_type": "authorization_code", "code": code, "redirect_uri": CB, "client_id": "app", "code_verifier": VERIFIER})
    assert good.status_code == 200, good.get_json()
    assert "refresh_token" in good.get_json()


# -- sessions, levels, prompt, max_age --------------------------------------------------------------


def test_no_session_goes_to_login_and_prompt_none_says_login_required(oidc):
    oidc.client()
    response = oidc.authorize()
    assert response.status_code == 302 and response.location.startswith("/login?next=")
    next_url = parse_qs(urlsplit(response.location).query)["next"][0]
    assert next_url.startswith("/oauth/authorize?") and authorization.MARKER in next_url
    assert query_of(oidc.authorize(prompt="none").location)["error"] == "login_required"


def test_matter_level_two_steps_up_a_basic_session_and_only_asks_for_proofing(oidc):
    oidc.client()
    with oidc.tx() as db:
        db.add(Matter(code="marriage-cert", name="婚姻登记证明", level=2, updated_at=datetime.now(UTC), updated_by="test"))
    account = oidc.account()
    sid = oidc.login(account)
    response = oidc.authorize(matter="marriage-cert")
    assert response.location.startswith("/login/step-up?")
    step = query_of(response.location)
    assert step["level"] == "2" and step["next"].startswith("/oauth/authorize?")
    assert query_of(oidc.authorize(matter="marriage-cert", prompt="none").location)["error"] == "interaction_required"
    # The step-up page verifies the real name and refreshes the session's level, then returns to next.
    with oidc.tx() as db:
        db.add(
            IdentityProofing(
                account_id=account,
                resident_id_hash="h" * 64,
                resident_id_masked="110***********002X",
                legal_name="张三",
                method="registry",
                source="test",
                verified_at=datetime.now(UTC),
            )
        )
        db.flush()
        row = sessions.refresh_level(db, db.get(SSOSession, sid))
        cookie = sessions.cookie_value(oidc.ctx.secret_key, row.sid, row.secret)
    oidc.browser.set_cookie(sessions.COOKIE, cookie, domain="localhost")  # a new level, a new cookie (as the page sets it)
    back = oidc.browser.get(step["next"])
    code = query_of(back.location)["code"]
    answer = oidc.token({"grant_type": "authorization_code", "code": code, "redirect_uri": CB}, "hall", oidc_secret(oidc))
    assert decode(oidc, answer.get_json()["id_token"]).claims["acr"] == "urn:hallmark:loa:2"


def oidc_secret(world):
    """The secret of the 'hall' client, replaced so the test knows it."""
    with world.tx() as db:
        return clients.new_secret(world.ctx, db, "hall", actor="test")


def test_client_minimum_and_acr_values_and_essential_claim_raise_the_level(oidc):
    oidc.client("strict", min_acr=2)
    oidc.client()
    oidc.login(oidc.account())
    assert oidc.authorize("strict").location.startswith("/login/step-up?")
    assert oidc.authorize(acr_values="urn:hallmark:loa:2").location.startswith("/login/step-up?")
    essential = json.dumps({"id_token": {"acr": {"essential": True, "values": ["urn:hallmark:loa:2"]}}})
    assert oidc.authorize(claims=essential).location.startswith("/login/step-up?")
    # a hall cannot lower a matter's level with acr_values
    with oidc.tx() as db:
        db.add(Matter(code="housing", name="住房公积金提取", level=3, updated_at=datetime.now(UTC), updated_by="test"))
    lowered = oidc.authorize(matter="housing", acr_values="urn:hallmark:loa:1")
    assert lowered.location.startswith("/login/step-up?") and query_of(lowered.location)["level"] == "3"


def test_sso_second_client_gets_a_code_without_login(oidc):
    secret = oidc.client()
    secret2 = oidc.client("county", redirect_uris=[CB2])
    sid = oidc.login(oidc.account(proofed=True))
    first = oidc.code()
    second = oidc.code(client_id="county", redirect_uri=CB2, acr_values="urn:hallmark:loa:2")
    id1 = oidc.token({"grant_type": "authorization_code", "code": first, "redirect_uri": CB}, "hall", secret).get_json()["id_token"]
    id2 = oidc.token({"grant_type": "authorization_code", "code": second, "redirect_uri": CB2}, "county", secret2).get_json()["id_token"]
    c1, c2 = decode(oidc, id1).claims, decode(oidc, id2).claims
    assert c1["sid"] == c2["sid"] == sid and c1["sub"] == c2["sub"]
    assert c2["acr"] == "urn:hallmark:loa:2" and c2["amr"] == ["pwd"]
    with oidc.ctx.sessions() as db:
        assert sorted(sessions.clients_of(db, sid)) == ["county", "hall"]


def test_prompt_login_and_max_age_need_a_fresh_login_without_looping(oidc):
    oidc.client()
    account = oidc.account()
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    oidc.login(account, auth_time=old)
    assert query_of(oidc.authorize(max_age="3600").location).get("code")
    to_login = oidc.authorize(max_age="60")
    assert to_login.location.startswith("/login?")
    assert query_of(oidc.authorize(max_age="60", prompt="none").location)["error"] == "login_required"
    next_url = query_of(to_login.location)["next"]
    # Coming back without logging in again: still sent to log in.
    assert oidc.browser.get(next_url).location.startswith("/login?")
    # The login page starts a new session, then returns to next: a code, not another login (even with max_age=0).
    oidc.login(account)
    assert "code" in query_of(oidc.browser.get(next_url).location)
    zero = oidc.authorize(max_age="0", prompt="login")
    oidc.login(account)
    answered = query_of(oidc.browser.get(query_of(zero.location)["next"]).location)
    assert "code" in answered
    secret = oidc_secret(oidc)
    claims = decode(
        oidc,
        oidc.token({"grant_type": "authorization_code", "code": answered["code"], "redirect_uri": CB}, "hall", secret).get_json()[
            "id_token"
        ],
    ).claims
    assert abs(claims["auth_time"] - time.time()) < 10


def test_consent_for_third_party_clients(oidc):
    oidc.client("thirdparty", first_party=False, name="Hall thirdparty <b>&</b>")
    account = oidc.account()
    oidc.login(account)
    assert query_of(oidc.authorize("thirdparty", prompt="none").location)["error"] == "consent_required"
    to_consent = oidc.authorize("thirdparty")
    assert to_consent.location.startswith("/consent?")
    page = oidc.browser.get(to_consent.location)
    assert page.status_code == 200 and "Hall thirdparty &lt;b&gt;&amp;&lt;/b&gt;" in page.get_data(as_text=True)
    html = page.get_data(as_text=True)
    assert "同意" in html and "拒绝" in html and page.headers["X-Frame-Options"] == "DENY"
    form_token = html.split('name="form_token" value="')[1].split('"')[0]
    next_url = query_of(to_consent.location)["next"]
    forged = oidc.browser.post("/consent", data={"next": next_url, "form_token": "forged", "decision": "allow"})
    assert forged.status_code == 400
    denied = oidc.browser.post("/consent", data={"next": next_url, "form_token": form_token, "decision": "deny"})
    assert query_of(denied.location)["error"] == "access_denied" and query_of(denied.location)["iss"] == ISSUER
    allowed = oidc.browser.post("/consent", data={"next": next_url, "form_token": form_token, "decision": "allow"})
    assert allowed.location == next_url
    assert "code" in query_of(oidc.browser.get(next_url).location)
    assert "code" in query_of(oidc.authorize("thirdparty").location)  # remembered
    again = oidc.authorize("thirdparty", prompt="consent")
    assert again.location.startswith("/consent?")


# -- the token endpoint ------------------------------------------------------------------------------


def test_code_flow_tokens_and_claims(oidc):
    secret = oidc.client()
    account = oidc.account(proofed=True)
    sid = oidc.login(account)
    asked = json.dumps({"id_token": {"name": None, "real_name_verified": {"essential": True}}, "userinfo": {"name": None}})
    code = oidc.code(nonce="n-0S6_WzA2Mj", verifier=VERIFIER, scope=f"openid profile {tokens.REALNAME_SCOPE}", claims=asked)
    with oidc.ctx.sessions() as db:
        row = db.scalars(select(AuthorizationCode)).one()
        assert row.code_hash == tokens.digest(code) and code not in row.code_hash
        assert (row.expires_at - datetime.now(UTC)).total_seconds() <= 60
    answer = oidc.token({"grant_type": "authorization_code", "code": code, "redirect_uri": CB, "code_verifier": VERIFIER}, "hall", secret)
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    body = answer.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600
    id_token = decode(oidc, body["id_token"])
    assert id_token.header["alg"] == "ES256"
    claims = id_token.claims
    assert claims["iss"] == ISSUER and claims["aud"] == "hall" and claims["sub"] == account and claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["sid"] == sid and claims["acr"] == "urn:hallmark:loa:2" and claims["amr"] == ["pwd"] and "auth_time" in claims
    assert claims["at_hash"] == keys.half_hash(body["access_token"])
    assert claims["name"] == "zhang display" and claims["real_name_verified"] is True  # asked for by the claims parameter
    assert "resident_id_masked" not in claims
    access = decode(oidc, body["access_token"])
    assert access.header["typ"] == "at+jwt"
    at = access.claims
    for name in ("iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "acr", "amr", "auth_time", "sid"):
        assert name in at, name
    info = oidc.rp.get("/oauth/userinfo", headers={"Authorization": "Bearer " + body["access_token"]})
    assert info.status_code == 200
    assert info.get_json() == {
        "sub": account,
        "name": "zhang display",
        "preferred_username": "zhang",
        "locale": "zh",
        "acr": "urn:hallmark:loa:2",
        "amr": ["pwd"],
        "auth_time": claims["auth_time"],
        "real_name_verified": True,
        "resident_id_masked": "110***********002X",
        "real_name_method": "registry",
    }


def test_replayed_code_is_refused_and_its_tokens_revoked(oidc):
    secret = oidc.client()
    oidc.login(oidc.account())
    code = oidc.code()
    first = oidc.token({"grant_type": "authorization_code", "code": code, "redirect_uri": CB}, "hall", secret).get_json()
    assert oidc.introspect(first["access_token"], "hall", secret)["active"] is True
    replay = oidc.token({"grant_type": "authorization_code", "code": code, "redirect_uri": CB}, "hall", secret)
    assert replay.status_code == 400 and replay.get_json()["error"] == "invalid_grant"
    assert oidc.introspect(first["access_token"], "hall", secret) == {"active": False}
    assert oidc.introspect(first["refresh_token"], "hall", secret) == {"active": False}
    refreshed = oidc.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, "hall", secret)
    assert refreshed.get_json()["error"] == "invalid_grant"
    assert oidc.rp.get("/oauth/userinfo", headers={"Authorization": "Bearer " + first["access_token"]}).status_code == 401
    assert "idp.token.family_revoked" in audit_actions(oidc)


def test_code_bound_to_client_redirect_uri_and_lifetime(oidc):
    secret = oidc.client()
    secret2 = oidc.client("county", redirect_uris=[CB2])
    oidc.login(oidc.account())
    code = oidc.code()
    assert (
        oidc.token({"grant_type": "authorization_code", "code": code, "redirect_uri": CB}, "county", secret2).get_json()["error"]
        == "invalid_grant"
    )
    assert (
        oidc.token({"grant_type": "authorization_code", "code": code, "redirect_uri": CB2}, "hall", secret).get_json()["error"]
        == "invalid_grant"
    )
    expired = oidc.code()
    with oidc.tx() as db:
        db.get(AuthorizationCode, tokens.digest(expired)).expires_at = datetime.now(UTC) - timedelta(seconds=1)
    assert (
        oidc.token({"grant_type": "authorization_code", "code": expired, "redirect_uri": CB}, "hall", secret).get_json()["error"]
        == "invalid_grant"
    )
    assert oidc.token({"grant_type": "authorization_code", "code": code, "redirect_uri": CB}, "hall", secret).status_code == 200


def test_refresh_rotation_and_reuse_detection(oidc):
    secret = oidc.client()
    oidc.login(oidc.account())
    first = oidc.token({"grant_type": "authorization_code", "code": oidc.code(), "redirect_uri": CB}, "hall", secret).get_json()
    second = oidc.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, "hall", secret).get_json()
    assert second["refresh_token"] != first["refresh_token"] and "id_token" in second
    assert oidc.introspect(first["refresh_token"], "hall", secret) == {"active": False}
    assert oidc.introspect(second["refresh_token"], "hall", secret)["active"] is True
    # The old one again: refused, and the whole family (the new refresh token and its access token) dies.
    replay = oidc.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, "hall", secret)
    assert replay.status_code == 400 and replay.get_json()["error"] == "invalid_grant"
    assert (
        oidc.token({"grant_type": "refresh_token", "refresh_token": second["refresh_token"]}, "hall", secret).get_json()["error"]
        == "invalid_grant"
    )
    assert oidc.introspect(second["access_token"], "hall", secret) == {"active": False}


def test_ended_session_ends_refresh_and_introspection(oidc):
    secret = oidc.client()
    sid = oidc.login(oidc.account())
    first = oidc.token({"grant_type": "authorization_code", "code": oidc.code(), "redirect_uri": CB}, "hall", secret).get_json()
    with oidc.tx() as db:
        sessions.end(db, sid, actor="test")
    assert oidc.introspect(first["access_token"], "hall", secret) == {"active": False}
    assert (
        oidc.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, "hall", secret).get_json()["error"]
        == "invalid_grant"
    )


def test_revocation(oidc):
    secret = oidc.client()
    secret2 = oidc.client("county", redirect_uris=[CB2])
    oidc.login(oidc.account())
    first = oidc.token({"grant_type": "authorization_code", "code": oidc.code(), "redirect_uri": CB}, "hall", secret).get_json()
    other = oidc.rp.post("/oauth/revoke", data={"token": first["access_token"]}, headers=basic("county", secret2))
    assert other.status_code == 400  # not its token
    assert oidc.introspect(first["access_token"], "hall", secret)["active"] is True
    revoked = oidc.rp.post(
        "/oauth/revoke", data={"token": first["access_token"], "token_type_hint": "access_token"}, headers=basic("hall", secret)
    )
    assert revoked.status_code == 200
    assert oidc.introspect(first["access_token"], "hall", secret) == {"active": False}
    assert oidc.introspect(first["refresh_token"], "hall", secret)["active"] is True  # only that access token
    assert oidc.rp.post("/oauth/revoke", data={"token": first["refresh_token"]}, headers=basic("hall", secret)).status_code == 200
    assert (
        oidc.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, "hall", secret).get_json()["error"]
        == "invalid_grant"
    )
    assert oidc.rp.post("/oauth/revoke", data={"token": "unknown"}, headers=basic("hall", secret)).status_code == 200


def test_introspection_is_for_confidential_clients_and_their_own_tokens(oidc):
    secret = oidc.client()
    oidc.client("app", client_type="public")
    rs_secret = oidc.client(
        "resource-server", redirect_uris=[], grant_types=["client_credentials"], scopes=["hallmark:introspect", "ca:read"]
    )
    other_secret = oidc.client("county", redirect_uris=[CB2])
    oidc.login(oidc.account())
    first = oidc.token({"grant_type": "authorization_code", "code": oidc.code(), "redirect_uri": CB}, "hall", secret).get_json()
    public = oidc.rp.post("/oauth/introspect", data={"token": first["access_token"], "client_id": "app"})
    assert public.status_code == 401 and public.get_json()["error"] == "invalid_client" and "WWW-Authenticate" in public.headers
    assert oidc.introspect(first["access_token"], "county", other_secret) == {"active": False}
    seen = oidc.introspect(first["access_token"], "resource-server", rs_secret)
    assert seen["active"] is True and seen["client_id"] == "hall" and seen["acr"] == "urn:hallmark:loa:1"


def test_client_credentials(oidc):
    secret = oidc.client(
        "approval", redirect_uris=[], grant_types=["client_credentials"], scopes=["ca:issue", "ca:read"], first_party=False
    )
    by_basic = oidc.token({"grant_type": "client_credentials", "scope": "ca:issue"}, "approval", secret)
    assert by_basic.status_code == 200
    claims = decode(oidc, by_basic.get_json()["access_token"]).claims
    assert claims["sub"] == "approval" == claims["client_id"] and claims["scope"] == "ca:issue" and "acr" not in claims
    by_post = oidc.token({"grant_type": "client_credentials", "client_id": "approval", "client_secret": secret})
    assert by_post.status_code == 401  # registered for client_secret_basic only
    assert oidc.token({"grant_type": "client_credentials", "scope": "ca:revoke"}, "approval", secret).get_json()["error"] == "invalid_scope"
    assert oidc.token({"grant_type": "client_credentials", "scope": "openid"}, "approval", secret).get_json()["error"] == "invalid_scope"
    assert oidc.token({"grant_type": "client_credentials"}, "approval", secret).get_json()["scope"] == "ca:issue ca:read"
    wrong = oidc.token({"grant_type": "client_credentials"}, "approval", "wrong")
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic")
    assert oidc.token({"grant_type": "client_credentials"}, "nobody", "x").status_code == 401
    hall_secret = oidc.client()
    assert oidc.token({"grant_type": "client_credentials"}, "hall", hall_secret).get_json()["error"] == "unauthorized_client"
    assert (
        oidc.token({"grant_type": "password", "username": "a", "password": "b"}, "approval", secret).get_json()["error"]
        == "unsupported_grant_type"
    )
    # a client_credentials token is no user token: not for userinfo by default, and without a user when asked for it
    userinfo = oidc.rp.get("/oauth/userinfo", headers={"Authorization": "Bearer " + by_basic.get_json()["access_token"]})
    assert userinfo.status_code == 401 and 'error="invalid_token"' in userinfo.headers["WWW-Authenticate"]
    for_userinfo = oidc.token({"grant_type": "client_credentials", "resource": oidc.ctx.issuer}, "approval", secret).get_json()
    userinfo = oidc.rp.get("/oauth/userinfo", headers={"Authorization": "Bearer " + for_userinfo["access_token"]})
    assert userinfo.status_code == 403 and "insufficient_scope" in userinfo.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "form, query, error",
    [
        ({"grant_type": ["client_credentials", "client_credentials"]}, "", "invalid_request"),
        ({"grant_type": "client_credentials", "scope": "x" * 600}, "", "invalid_request"),
        ({"grant_type": "client_credentials"}, "?grant_type=client_credentials", "invalid_request"),
        ({"grant_type": "client_credentials", "client_secret": "s"}, "", "invalid_request"),  # and a Basic header: two ways
    ],
)
def test_token_endpoint_refuses_repeated_oversized_and_url_parameters(oidc, form, query, error):
    secret = oidc.client("approval", redirect_uris=[], grant_types=["client_credentials"], scopes=["ca:issue"])
    answer = oidc.rp.post("/oauth/token" + query, data=form, headers=basic("approval", secret))
    assert answer.status_code == 400 and answer.get_json()["error"] == error


def test_forged_expired_and_alg_none_tokens_are_refused_everywhere(oidc):
    secret = oidc.client()
    oidc.login(oidc.account())
    good = oidc.token({"grant_type": "authorization_code", "code": oidc.code(), "redirect_uri": CB}, "hall", secret).get_json()[
        "access_token"
    ]
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    b64 = lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()  # noqa: E731
    none_header = b64({"alg": "none", "typ": "at+jwt", "kid": json.loads(base64.urlsafe_b64decode(header + "=="))["kid"]})
    alg_none = f"{none_header}.{payload}."
    tampered = f"{header}.{b64({**claims, 'scope': 'openid profile hallmark:realname'})}.{signature}"
    foreign_key = ECKey.generate_key("P-256", parameters={"kid": keys.active(oidc.ctx).kid}, private=True)
    forged = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": foreign_key.kid}, claims, foreign_key)
    expired_claims = {**claims, "exp": int(time.time()) - 120, "iat": int(time.time()) - 720}
    expired = keys.sign(oidc.ctx, expired_claims, typ="at+jwt")
    for bad in (alg_none, tampered, forged, expired, "not-a-token"):
        assert oidc.rp.get("/oauth/userinfo", headers={"Authorization": "Bearer " + bad}).status_code == 401
        assert oidc.introspect(bad, "hall", secret) == {"active": False}
    # an ID token is no access token
    id_token = oidc.token({"grant_type": "authorization_code", "code": oidc.code(), "redirect_uri": CB}, "hall", secret).get_json()[
        "id_token"
    ]
    assert oidc.rp.get("/oauth/userinfo", headers={"Authorization": "Bearer " + id_token}).status_code == 401


def test_private_key_jwt(oidc):
    key = RSAKey.generate_key(2048, parameters={"kid": "rp-1"}, private=True)
    jwks = json.dumps({"keys": [key.as_dict(private=False)]})
    oidc.client(
        "signed", redirect_uris=[], grant_types=["client_credentials"], scopes=["ca:read"], auth_method="private_key_jwt", jwks=jwks
    )

    def assertion(**over):
        now = int(time.time())
        claims = {
            "iss": "signed",
            "sub": "signed",
            "aud": ISSUER + "/oauth/token",
            "jti": secrets.token_urlsafe(12),
            "exp": now + 60,
            "iat": now,
            **over,
        }
        return jwt.encode({"alg": "RS256", "kid": "rp-1"}, claims, key)

    def request(token):
        return oidc.token(
            {
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": token,
            }
        )

    one = assertion()
    assert request(one).status_code == 200
    assert request(one).get_json()["error"] == "invalid_client"  # jti used once
    assert request(assertion(aud="https://elsewhere.test/token")).get_json()["error"] == "invalid_client"
    assert request(assertion(exp=int(time.time()) - 300)).get_json()["error"] == "invalid_client"
    assert request(assertion(exp=int(time.time()) + 7200)).get_json()["error"] == "invalid_client"
    other = RSAKey.generate_key(2048, parameters={"kid": "rp-1"}, private=True)
    forged = jwt.encode(
        {"alg": "RS256", "kid": "rp-1"},
        {"iss": "signed", "sub": "signed", "aud": ISSUER, "jti": "abcdefghij", "exp": int(time.time()) + 60},
        other,
    )
    assert request(forged).get_json()["error"] == "invalid_client"
    head = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    body = (
        base64.urlsafe_b64encode(
            json.dumps({"iss": "signed", "sub": "signed", "aud": ISSUER, "jti": "zzzzzzzzzz", "exp": int(time.time()) + 60}).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    assert request(f"{head}.{body}.").get_json()["error"] == "invalid_client"


def test_client_credentials_fast_path_answers_like_the_authlib_path(oidc, monkeypatch):
    from idp.oidc import grants

    secret = oidc.client(
        "approval", redirect_uris=[], grant_types=["client_credentials"], scopes=["ca:issue", "ca:read"], auth_method="client_secret_post"
    )
    form = {"grant_type": "client_credentials", "scope": "ca:read", "client_id": "approval", "client_secret": secret}
    fast = oidc.token(form)
    monkeypatch.setattr(grants, "client_credentials_fast", lambda *a, **k: None)
    slow = oidc.token(form)
    assert fast.status_code == slow.status_code == 200
    assert fast.headers["Cache-Control"] == slow.headers["Cache-Control"] == "no-store"
    a, b = fast.get_json(), slow.get_json()
    assert set(a) == set(b) and a["scope"] == b["scope"] == "ca:read" and a["expires_in"] == b["expires_in"]
    ca, cb = decode(oidc, a["access_token"]), decode(oidc, b["access_token"])
    assert ca.header == cb.header and set(ca.claims) == set(cb.claims)
    assert {k: v for k, v in ca.claims.items() if k not in ("jti", "iat", "exp")} == {
        k: v for k, v in cb.claims.items() if k not in ("jti", "iat", "exp")
    }


def test_plain_client_credentials_are_answered_before_flask_and_everything_else_after(oidc, monkeypatch):
    from idp.oidc import server

    secret = oidc.client("approval", redirect_uris=[], grant_types=["client_credentials"], scopes=["ca:issue"])
    calls = []
    real = server.server_for
    monkeypatch.setattr(server, "server_for", lambda ctx: calls.append(1) or real(ctx))
    assert oidc.token({"grant_type": "client_credentials"}, "approval", secret).status_code == 200
    assert calls == []  # the fast path answered
    assert oidc.token({"grant_type": "client_credentials", "scope": "ca:revoke"}, "approval", secret).get_json()["error"] == "invalid_scope"
    assert oidc.token({"grant_type": "client_credentials"}, "approval", "wrong").status_code == 401
    assert len(calls) == 2  # errors come from the Authlib path
    import io

    chunked = oidc.rp.post(
        "/oauth/token",
        input_stream=io.BytesIO(b"grant_type=client_credentials"),
        content_type="application/x-www-form-urlencoded",
        headers={**basic("approval", secret), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert chunked.status_code == 200
    before = len(calls)
    big = oidc.token(
        {"grant_type": "client_credentials", "padding": "x" * 250, "more": "y" * 250, **{f"p{i}": "z" * 250 for i in range(16)}},
        "approval",
        secret,
    )
    assert big.status_code == 200 and len(calls) == before + 1  # over the fast path's body limit: Flask serves it


def test_client_registered_for_rs256_gets_rs256_id_tokens(oidc):
    secret = oidc.client(id_token_alg="RS256")
    oidc.login(oidc.account())
    body = oidc.token({"grant_type": "authorization_code", "code": oidc.code(), "redirect_uri": CB}, "hall", secret).get_json()
    assert decode(oidc, body["id_token"]).header["alg"] == "RS256"
    assert decode(oidc, body["access_token"]).header["alg"] == "ES256"


def test_unknown_id_token_algorithm_is_refused(oidc):
    with pytest.raises(clients.ClientError, match="must be one of"):
        oidc.client(id_token_alg="HS256")


def test_two_refreshes_racing_with_one_token_leave_one_winner_and_a_dead_family(oidc):
    from concurrent.futures import ThreadPoolExecutor

    secret = oidc.client()
    oidc.login(oidc.account())
    first = oidc.token({"grant_type": "authorization_code", "code": oidc.code(), "redirect_uri": CB}, "hall", secret).get_json()

    def refresh(_):
        client = oidc.app.test_client()
        return client.post(
            "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, headers=basic("hall", secret)
        )

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(refresh, range(2)))
    assert sorted(a.status_code for a in answers) == [200, 400]
    winner = next(a for a in answers if a.status_code == 200).get_json()
    assert (
        oidc.token({"grant_type": "refresh_token", "refresh_token": winner["refresh_token"]}, "hall", secret).get_json()["error"]
        == "invalid_grant"
    )
