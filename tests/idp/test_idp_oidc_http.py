"""The OpenID provider over real HTTP (``hallmark serve``), judged by an independent RP library.

Authlib's requests client (``OAuth2Session``) plays the hall: discovery, the code
flow with PKCE (the person signs in through the real login form), the ID token
checked against the JWKS with joserfc, userinfo, refresh with rotation and reuse
detection, introspection and revocation. A second hall then signs in without a
login page (SSO). Clients are registered with ``hallmark idp client add``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from core import db as core_db
from idp.models import Account, IdentityProofing, Matter, SSOSession
from idp.people import accounts, sessions
from tests.conftest import initialised_copy, run_hallmark, start_server, stop_server

pytestmark = pytest.mark.slow
CITY_CB = "http://127.0.0.1:8001/callback"
COUNTY_CB = "http://127.0.0.1:8002/callback"
PASSWORD = "Lotus-pond 2026"


def _add_client(instance, *args) -> dict:
    result = run_hallmark(instance, "idp", "client", "add", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    instance = tmp_path_factory.mktemp("oidc-instance")
    initialised_copy(instance)
    city = _add_client(
        instance,
        "--name",
        "市网上办事大厅",
        "--client-id",
        "city-hall",
        "--redirect-uri",
        CITY_CB,
        "--scope",
        "openid profile hallmark:realname",
        "--first-party",
        "--backchannel-logout-uri",
        "http://127.0.0.1:8001/logout",
    )
    county = _add_client(
        instance,
        "--name",
        "县网上办事大厅",
        "--client-id",
        "county-hall",
        "--redirect-uri",
        COUNTY_CB,
        "--scope",
        "openid profile",
        "--first-party",
        "--auth-method",
        "client_secret_post",
    )
    approval = _add_client(
        instance,
        "--name",
        "不动产审批系统",
        "--client-id",
        "approval",
        "--grant",
        "client_credentials",
        "--scope",
        "ca:issue",
        "--scope",
        "hallmark:introspect",
    )
    listed = run_hallmark(instance, "idp", "client", "list")
    assert "city-hall" in listed.stdout and city["client_secret"] not in listed.stdout
    process, base = start_server(instance)
    engine = core_db.make_engine(f"sqlite:///{instance / 'hallmark.db'}")
    world = World(instance, base, core_db.make_session_factory(engine), city, county, approval)
    world.meta = requests.get(base + "/.well-known/openid-configuration", timeout=10).json()
    yield world
    stop_server(process)
    engine.dispose()


class World:
    def __init__(self, instance, base, factory, city, county, approval):
        self.instance, self.base, self.sessions = instance, base, factory
        self.city, self.county, self.approval = city, county, approval

    def account(self, *, proofed=False, password=PASSWORD) -> tuple[str, str]:
        username = "u" + uuid.uuid4().hex[:10]
        with core_db.transaction(self.sessions) as db:
            account = accounts.register(db, identifier=username, password=password, display_name="王小明")
            if proofed:
                db.add(
                    IdentityProofing(
                        account_id=account.id,
                        resident_id_hash=uuid.uuid4().hex * 2,
                        resident_id_masked="110***********002X",
                        legal_name="王小明",
                        method="counter",
                        source="test",
                        verified_at=datetime.now(UTC),
                    )
                )
            return account.id, username

    def browser_with_session(self, account_id) -> requests.Session:
        with core_db.transaction(self.sessions) as db:
            row = sessions.start(db, db.get(Account, account_id), {"pwd"})
            sid, secret = row.sid, row.secret
        from core import settings as settings_module

        browser = requests.Session()
        key = settings_module.load(self.instance).secret_key.encode()
        browser.cookies.set(sessions.COOKIE, sessions.cookie_value(key, sid, secret), domain="127.0.0.1", path="/")
        return browser

    def hall(self, which="city", **kw) -> OAuth2Session:
        client = self.city if which == "city" else self.county
        return OAuth2Session(
            client["client_id"],
            client["client_secret"],
            scope=" ".join(client["scope"]),
            redirect_uri=client["redirect_uris"][0],
            code_challenge_method="S256",
            token_endpoint_auth_method=client["auth_method"],
            **kw,
        )

    def keyset(self) -> KeySet:
        return KeySet.import_key_set(requests.get(self.meta["jwks_uri"], timeout=10).json())


def follow(browser: requests.Session, base: str, url: str, *, stop_at: str, limit: int = 8) -> requests.Response:
    """Follow redirects on the IdP until one leaves it for ``stop_at`` (the hall); return that redirect."""
    for _ in range(limit):
        response = browser.get(url if url.startswith("http") else base + url, allow_redirects=False, timeout=10)
        location = response.headers.get("Location", "")
        if location.startswith(stop_at) or response.status_code not in (301, 302, 303):
            return response
        url = location
    raise AssertionError("too many redirects")


def sign_in_through_form(browser: requests.Session, base: str, login_url: str, username: str) -> str:
    page = browser.get(base + login_url, timeout=10)
    assert page.status_code == 200, page.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    next_url = parse_qs(urlsplit(login_url).query)["next"][0]
    posted = browser.post(
        base + "/login",
        data={"csrf_token": token, "next": next_url, "identifier": username, "password": PASSWORD},
        allow_redirects=False,
        timeout=10,
    )
    assert posted.status_code == 303, posted.text
    return posted.headers["Location"]


def validate_id_token(world, token: dict, client_id: str, nonce: str | None) -> dict:
    decoded = jwt.decode(token["id_token"], world.keyset(), algorithms=["ES256", "RS256"])
    claims = decoded.claims
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": world.meta["issuer"]},
        aud={"essential": True, "value": client_id},
        exp={"essential": True},
        sub={"essential": True},
    ).validate(claims)
    if nonce:
        assert claims["nonce"] == nonce
    import base64
    import hashlib

    half = hashlib.sha256(token["access_token"].encode()).digest()[:16]
    assert claims["at_hash"] == base64.urlsafe_b64encode(half).rstrip(b"=").decode()
    return claims


def test_discovery_is_valid_metadata(idp):
    OpenIDProviderMetadata(idp.meta).validate()
    assert idp.meta["issuer"] == idp.base
    assert idp.meta["code_challenge_methods_supported"] == ["S256"]


def test_relying_party_library_full_flow_with_sso_refresh_introspection_revocation(idp):
    account_id, username = idp.account(proofed=True)
    browser = requests.Session()
    hall = idp.hall("city")
    verifier, nonce = generate_token(48), generate_token(20)
    url, state = hall.create_authorization_url(
        idp.meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce, acr_values="urn:hallmark:loa:2"
    )
    # Not signed in: the IdP sends the browser to its login page, which returns to the same authorization.
    first = browser.get(url, allow_redirects=False, timeout=10)
    assert first.status_code == 302 and first.headers["Location"].startswith("/login?next=")
    back = sign_in_through_form(browser, idp.base, first.headers["Location"], username)
    assert back.startswith("/oauth/authorize?")
    answer = follow(browser, idp.base, back, stop_at=CITY_CB)
    location = answer.headers["Location"]
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert params["iss"] == idp.meta["issuer"] and params["state"] == state  # RFC 9207
    token = hall.fetch_token(idp.meta["token_endpoint"], authorization_response=location, code_verifier=verifier, state=state)
    claims = validate_id_token(idp, token, "city-hall", nonce)
    assert claims["sub"] == account_id and claims["acr"] == "urn:hallmark:loa:2" and claims["amr"] == ["pwd"]
    assert "auth_time" in claims and claims["sid"]
    info = hall.get(idp.meta["userinfo_endpoint"], timeout=10).json()
    assert info["sub"] == account_id and info["name"] == "王小明" and info["real_name_verified"] is True
    assert info["resident_id_masked"] == "110***********002X"

    # Single sign-on: the county hall gets a code with no login page.
    county = idp.hall("county")
    verifier2 = generate_token(48)
    url2, state2 = county.create_authorization_url(idp.meta["authorization_endpoint"], code_verifier=verifier2, nonce="n2")
    location2 = follow(browser, idp.base, url2, stop_at=COUNTY_CB).headers["Location"]
    token2 = county.fetch_token(idp.meta["token_endpoint"], authorization_response=location2, code_verifier=verifier2, state=state2)
    claims2 = validate_id_token(idp, token2, "county-hall", "n2")
    assert claims2["sid"] == claims["sid"] and claims2["sub"] == account_id

    # Refresh with rotation; replaying the old refresh token kills the family, the new one included.
    old_refresh = token["refresh_token"]
    refreshed = hall.refresh_token(idp.meta["token_endpoint"])
    assert refreshed["refresh_token"] != old_refresh and refreshed["access_token"] != token["access_token"]
    introspect = idp.meta["introspection_endpoint"]
    assert hall.introspect_token(introspect, token=refreshed["access_token"]).json()["active"] is True
    replay = requests.post(
        idp.meta["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": old_refresh},
        auth=("city-hall", idp.city["client_secret"]),
        timeout=10,
    )
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    dead = requests.post(
        idp.meta["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"]},
        auth=("city-hall", idp.city["client_secret"]),
        timeout=10,
    )
    assert dead.json()["error"] == "invalid_grant"
    assert hall.introspect_token(introspect, token=refreshed["access_token"]).json() == {"active": False}
    assert hall.get(idp.meta["userinfo_endpoint"], timeout=10).status_code == 401

    # Revocation at the county hall: its refresh token, then its access token is inactive too.
    wrong_method = requests.post(
        introspect, data={"token": token2["access_token"]}, auth=("county-hall", idp.county["client_secret"]), timeout=10
    )
    assert wrong_method.status_code == 401  # registered for client_secret_post, not basic
    county_introspect = requests.post(
        introspect,
        data={"token": token2["access_token"], "client_id": "county-hall", "client_secret": idp.county["client_secret"]},
        timeout=10,
    ).json()
    assert county_introspect["active"] is True and county_introspect["sid"] == claims["sid"]
    revoked = requests.post(
        idp.meta["revocation_endpoint"],
        data={"token": token2["refresh_token"], "client_id": "county-hall", "client_secret": idp.county["client_secret"]},
        timeout=10,
    )
    assert revoked.status_code == 200
    after = requests.post(
        introspect,
        data={"token": token2["access_token"], "client_id": "county-hall", "client_secret": idp.county["client_secret"]},
        timeout=10,
    ).json()
    assert after == {"active": False}


def test_two_halls_share_a_session_and_logout_at_one_reaches_the_other(idp):
    """Two RPs (Authlib's client) on one IdP session; RP-initiated logout at one, back-channel tokens to both."""
    from tests.logout_receiver import Receiver, check_logout_token

    receiver = Receiver()
    try:
        halls = {}
        for name, path in (("east", "/east"), ("west", "/west")):
            port_base = f"http://127.0.0.1:{9000 + len(halls)}"
            halls[name] = _add_client(
                idp.instance,
                "--name",
                f"{name} hall",
                "--client-id",
                f"{name}-{uuid.uuid4().hex[:6]}",
                "--redirect-uri",
                port_base + "/cb",
                "--scope",
                "openid profile",
                "--first-party",
                "--backchannel-logout-uri",
                receiver.base + path,
                "--post-logout-redirect-uri",
                port_base + "/bye",
            )
        _, username = idp.account()
        browser = requests.Session()
        issued = {}
        for name, client in halls.items():
            rp = OAuth2Session(
                client["client_id"],
                client["client_secret"],
                scope="openid profile",
                redirect_uri=client["redirect_uris"][0],
                code_challenge_method="S256",
            )
            verifier, nonce = generate_token(48), generate_token(16)
            url, state = rp.create_authorization_url(idp.meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
            first = browser.get(url, allow_redirects=False, timeout=10)
            if first.headers["Location"].startswith("/login?next="):
                assert name == "east", "the second hall must not see a login page"
                answer = follow(
                    browser,
                    idp.base,
                    sign_in_through_form(browser, idp.base, first.headers["Location"], username),
                    stop_at=client["redirect_uris"][0],
                )
            else:
                assert name == "west"
                answer = first
            token = rp.fetch_token(
                idp.meta["token_endpoint"], authorization_response=answer.headers["Location"], code_verifier=verifier, state=state
            )
            issued[name] = (rp, token, validate_id_token(idp, token, client["client_id"], nonce))
        assert issued["east"][2]["sid"] == issued["west"][2]["sid"]

        # RP-initiated logout at the east hall, as its library builds it.
        east_token = issued["east"][1]
        bye = halls["east"]["post_logout_redirect_uris"][0]
        ended = follow(
            browser,
            idp.base,
            idp.meta["end_session_endpoint"]
            + "?"
            + urlencode({"id_token_hint": east_token["id_token"], "post_logout_redirect_uri": bye, "state": "st-e"}),
            stop_at="http://127.0.0.1:9000",
        )
        assert ended.status_code == 200 and "您已退出登录" in ended.text and f'href="{bye}?state=st-e"' in ended.text
        jwks = requests.get(idp.meta["jwks_uri"], timeout=10).json()
        for name, path in (("east", "/east"), ("west", "/west")):
            claims = check_logout_token(receiver.wait_for(path)[0], jwks, issuer=idp.meta["issuer"], client_id=halls[name]["client_id"])
            assert claims["sid"] == issued[name][2]["sid"] and claims["sub"] == issued[name][2]["sub"]
        # The west hall's tokens died with the session.
        west_rp, west_token, _ = issued["west"]
        assert west_rp.get(idp.meta["userinfo_endpoint"], timeout=10).status_code == 401
        refused = requests.post(
            idp.meta["token_endpoint"],
            data={"grant_type": "refresh_token", "refresh_token": west_token["refresh_token"]},
            auth=(halls["west"]["client_id"], halls["west"]["client_secret"]),
            timeout=10,
        )
        assert refused.json()["error"] == "invalid_grant"
    finally:
        receiver.close()


def test_step_up_prompt_none_max_age_and_unmet_level(idp):
    account_id, _ = idp.account()
    with core_db.transaction(idp.sessions) as db:
        if db.get(Matter, "http-marriage") is None:
            db.add(Matter(code="http-marriage", name="婚姻登记", level=2, updated_at=datetime.now(UTC), updated_by="test"))
    browser = idp.browser_with_session(account_id)
    hall = idp.hall("city")
    verifier = generate_token(48)
    url, _ = hall.create_authorization_url(idp.meta["authorization_endpoint"], code_verifier=verifier, matter="http-marriage")
    step = browser.get(url, allow_redirects=False, timeout=10)
    assert step.status_code == 302 and step.headers["Location"].startswith("/login/step-up?")
    assert parse_qs(urlsplit(step.headers["Location"]).query)["level"] == ["2"]
    page = browser.get(idp.base + step.headers["Location"], timeout=10)
    assert page.status_code == 200  # the step-up page asks for the real-name check only

    def error_of(**extra):
        u, _ = hall.create_authorization_url(idp.meta["authorization_endpoint"], code_verifier=verifier, **extra)
        location = browser.get(u, allow_redirects=False, timeout=10).headers["Location"]
        assert location.startswith(CITY_CB)
        return parse_qs(urlsplit(location).query)["error"][0]

    assert error_of(matter="http-marriage", prompt="none") == "interaction_required"
    assert (
        error_of(claims=json.dumps({"id_token": {"acr": {"essential": True, "values": ["urn:other:high"]}}}))
        == "unmet_authentication_requirements"
    )
    assert requests.get(url + "&prompt=none", allow_redirects=False, timeout=10).headers["Location"].count("error=login_required") == 1
    with core_db.transaction(idp.sessions) as db:
        for row in db.scalars(select(SSOSession).where(SSOSession.account_id == account_id)):
            row.auth_time = datetime.fromtimestamp(int(time.time()) - 600, UTC)
    assert error_of(max_age="60", prompt="none") == "login_required"
    relogin = browser.get(
        hall.create_authorization_url(idp.meta["authorization_endpoint"], code_verifier=verifier, max_age="60")[0],
        allow_redirects=False,
        timeout=10,
    )
    assert relogin.headers["Location"].startswith("/login?next=")


def test_bad_input_over_http(idp):
    account_id, _ = idp.account()
    browser = idp.browser_with_session(account_id)
    authorize = idp.meta["authorization_endpoint"]
    unknown = browser.get(
        authorize,
        params={"client_id": "nobody", "redirect_uri": CITY_CB, "response_type": "code", "scope": "openid"},
        allow_redirects=False,
        timeout=10,
    )
    assert unknown.status_code == 400 and "Location" not in unknown.headers and "text/html" in unknown.headers["Content-Type"]
    mismatch = browser.get(
        authorize,
        params={"client_id": "city-hall", "redirect_uri": "http://127.0.0.1:8001/other", "response_type": "code", "scope": "openid"},
        allow_redirects=False,
        timeout=10,
    )
    assert mismatch.status_code == 400 and "Location" not in mismatch.headers
    hall = idp.hall("city")
    verifier = generate_token(48)
    url, state = hall.create_authorization_url(authorize, code_verifier=verifier)
    location = browser.get(url, allow_redirects=False, timeout=10).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    token_url = idp.meta["token_endpoint"]
    auth = ("city-hall", idp.city["client_secret"])
    base = {"grant_type": "authorization_code", "code": code, "redirect_uri": CITY_CB}
    assert requests.post(token_url, data=base, auth=auth, timeout=10).json()["error"] == "invalid_request"  # no verifier
    assert requests.post(token_url, data={**base, "code_verifier": "x" * 43}, auth=auth, timeout=10).json()["error"] == "invalid_grant"
    good = requests.post(token_url, data={**base, "code_verifier": verifier}, auth=auth, timeout=10)
    assert good.status_code == 200
    replay = requests.post(token_url, data={**base, "code_verifier": verifier}, auth=auth, timeout=10)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    access = good.json()["access_token"]
    assert requests.get(idp.meta["userinfo_endpoint"], headers={"Authorization": f"Bearer {access}"}, timeout=10).status_code == 401
    header, payload, _ = access.split(".")
    import base64

    none = base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt"}').rstrip(b"=").decode()
    assert (
        requests.get(idp.meta["userinfo_endpoint"], headers={"Authorization": f"Bearer {none}.{payload}."}, timeout=10).status_code == 401
    )
    repeated = requests.post(
        token_url,
        data=[("grant_type", "client_credentials"), ("grant_type", "client_credentials")],
        auth=("approval", idp.approval["client_secret"]),
        timeout=10,
    )
    assert repeated.status_code == 400 and repeated.json()["error"] == "invalid_request"
    oversized = requests.post(
        token_url,
        data={"grant_type": "client_credentials", "scope": "ca:issue " * 100},
        auth=("approval", idp.approval["client_secret"]),
        timeout=10,
    )
    assert oversized.status_code == 400 and oversized.json()["error"] == "invalid_request"
    huge = browser.get(
        authorize,
        params={"client_id": "city-hall", "redirect_uri": CITY_CB, "response_type": "code", "scope": "openid", "state": "s" * 5000},
        allow_redirects=False,
        timeout=10,
    )
    assert huge.status_code == 302 and "error=invalid_request" in huge.headers["Location"]
    wrong_secret = requests.post(token_url, data={"grant_type": "client_credentials"}, auth=("approval", "nope"), timeout=10)
    assert wrong_secret.status_code == 401 and wrong_secret.headers["WWW-Authenticate"].startswith("Basic ")


def test_ca_api_accepts_our_client_credentials_tokens(idp):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    answer = requests.post(
        idp.meta["token_endpoint"],
        data={"grant_type": "client_credentials", "scope": "ca:issue"},
        auth=("approval", idp.approval["client_secret"]),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )
    body = {
        "profile": "person-auth",
        "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
        "subject_id": "11010519491231002X",
        "name": "李四",
    }
    issued = requests.post(idp.base + "/api/ca/certificates", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert issued.status_code == 201, issued.text
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert (
        requests.post(idp.base + "/api/ca/certificates", json=body, headers={"Authorization": f"Bearer {forged}"}, timeout=10).status_code
        == 401
    )


def test_rotate_keys_and_client_removal_through_the_cli(idp):
    before = {k["kid"] for k in requests.get(idp.meta["jwks_uri"], timeout=10).json()["keys"]}
    rotated = run_hallmark(idp.instance, "idp", "rotate-keys", "--alg", "ES256", "--immediately")
    assert rotated.returncode == 0, rotated.stderr
    new_kid = re.search(r"ES256\s+new key (\S+)", rotated.stdout).group(1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        published = {k["kid"] for k in requests.get(idp.meta["jwks_uri"], timeout=10).json()["keys"]}
        if new_kid in published:
            break
        time.sleep(1)
    assert new_kid in published and before <= published  # old keys stay until their tokens expire
    # The serving processes sign with the key made by another process (the CLI) once their cache expires.
    import base64

    kids = set()
    while time.monotonic() < deadline and new_kid not in kids:
        answer = requests.post(
            idp.meta["token_endpoint"],
            data={"grant_type": "client_credentials"},
            auth=("approval", idp.approval["client_secret"]),
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        kids.add(json.loads(base64.urlsafe_b64decode(answer.json()["access_token"].split(".")[0] + "=="))["kid"])
        time.sleep(0.5)
    assert new_kid in kids
    listed = run_hallmark(idp.instance, "idp", "signing-keys")
    assert new_kid in listed.stdout and "retired" in listed.stdout
    extra = _add_client(idp.instance, "--name", "临时", "--client-id", "temp", "--grant", "client_credentials", "--scope", "ca:read")
    ok = requests.post(
        idp.meta["token_endpoint"], data={"grant_type": "client_credentials"}, auth=("temp", extra["client_secret"]), timeout=10
    )
    assert ok.status_code == 200
    removed = run_hallmark(idp.instance, "idp", "client", "remove", "temp")
    assert removed.returncode == 0
    deadline = time.monotonic() + 15  # other processes see a removal within the client cache time (5 s)
    status = 200
    while time.monotonic() < deadline and status == 200:
        status = requests.post(
            idp.meta["token_endpoint"], data={"grant_type": "client_credentials"}, auth=("temp", extra["client_secret"]), timeout=10
        ).status_code
        time.sleep(0.5)
    assert status == 401
    assert run_hallmark(idp.instance, "audit", "verify").returncode == 0
    bad = run_hallmark(idp.instance, "idp", "client", "add", "--name", "x", "--redirect-uri", "http://example.com/cb")
    assert bad.returncode == 1 and "only https" in bad.stderr and "Traceback" not in bad.stderr
