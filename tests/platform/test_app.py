"""The app factory in-process: /healthz, problem+json, the bearer-token check."""

from __future__ import annotations

import json
import time

import pytest
from flask import g
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from core import bearer
from hallmark.app import create_app
from tests.conftest import TOKEN_LABEL, app_settings

TEST_API = bearer.ApiResource("/api/test", scopes=("ca:issue",))


def make_settings(tmp_path, database_url, **overrides):
    return app_settings(tmp_path, database_url, HALLMARK_MAX_REQUEST_BYTES="4096", **overrides)


@pytest.fixture
def signing_key():
    return ECKey.generate_key("P-256", parameters={"kid": "test-1"}, private=True)


@pytest.fixture
def app(tmp_path, migrated, signing_key):
    engine, _ = migrated
    app = create_app(
        make_settings(tmp_path, engine.url.render_as_string(hide_password=False)),
        bearer_jwks={"keys": [signing_key.as_dict(private=False)]},
    )

    @app.post("/api/test/echo")
    @TEST_API.require("ca:issue")
    def echo():
        return {"sub": g.token["sub"]}

    yield app
    app.extensions["hallmark.services"].close()


def mint(key, *, typ="at+jwt", alg="ES256", iss="https://id.test", scope="ca:issue", exp_in=300, aud="https://id.test/api/test", **extra):
    now = int(time.time())
    claims = {"iss": iss, "sub": "client-1", "aud": aud, "scope": scope, "exp": now + exp_in, "iat": now, **extra}
    if aud is None:
        del claims["aud"]
    return jwt.encode({"alg": alg, "typ": typ, "kid": key.kid}, claims, key)


def test_healthz_ok(app):
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["database"]["status"] == "ok"
    assert body["hsm"] == {**body["hsm"], "status": "ok", "token": TOKEN_LABEL}


def test_healthz_503_when_token_cannot_be_opened(tmp_path, database_url):
    from core import db
    from hallmark import components

    components.upgrade_database(db.make_engine(database_url))
    app = create_app(make_settings(tmp_path, database_url, HALLMARK_TOKEN_LABEL="unplugged-token"))
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["database"]["status"] == "ok"
    assert body["hsm"]["status"] == "error" and "unplugged-token" in body["hsm"]["detail"]


def test_healthz_503_when_database_unreachable(tmp_path):
    app = create_app(make_settings(tmp_path, "postgresql+psycopg://nobody:secretpw@127.0.0.1:1/none"))
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["database"]["status"] == "error" and "cannot reach the database" in body["database"]["detail"]
    assert "secretpw" not in response.get_data(as_text=True)
    assert body["hsm"]["status"] == "ok"


def test_errors_are_problem_json(app):
    client = app.test_client()
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and missing.content_type == "application/problem+json"
    assert missing.get_json()["status"] == 404
    too_big = client.post("/api/test/echo", data=b"x" * 10000, headers={"Authorization": "Bearer x"})
    assert too_big.status_code == 413 and too_big.content_type == "application/problem+json"
    wrong_method = client.delete("/healthz")
    assert wrong_method.status_code == 405 and "GET" in wrong_method.headers["Allow"]


def test_bearer_accepts_a_valid_token(app, signing_key):
    response = app.test_client().post("/api/test/echo", headers={"Authorization": f"Bearer {mint(signing_key)}"})
    assert response.status_code == 200 and response.get_json() == {"sub": "client-1"}


@pytest.mark.parametrize(
    "case, status, detail",
    [
        ("no header", 401, "needs a bearer access token"),
        ("expired", 401, "expired"),
        ("wrong issuer", 401, "iss"),
        ("id token", 401, "typ must be at+jwt"),
        ("other key", 401, "not valid"),
        ("alg none", 401, "not valid"),
        ("garbage", 401, "not valid"),
        ("missing scope", 403, "lacks the scope(s) ca:issue"),
        ("other audience", 401, "not meant for this API"),
        ("no audience", 401, "not meant for this API"),
    ],
)
def test_bearer_refusals(app, signing_key, case, status, detail):
    stranger = RSAKey.generate_key(2048, parameters={"kid": "test-1"}, private=True)
    tokens = {
        "expired": mint(signing_key, exp_in=-3600),
        "wrong issuer": mint(signing_key, iss="https://evil.test"),
        "id token": mint(signing_key, typ="JWT"),
        "other key": mint(stranger, alg="RS256"),
        "alg none": _alg_none(),
        "garbage": "not-a-jwt",
        "missing scope": mint(signing_key, scope="openid profile"),
        "other audience": mint(signing_key, aud=["https://id.test/api/ca", "https://id.test"]),
        "no audience": mint(signing_key, aud=None),
    }
    headers = {"Authorization": f"Bearer {tokens[case]}"} if case in tokens else {}
    response = app.test_client().post("/api/test/echo", headers=headers)
    assert response.status_code == status
    assert response.content_type == "application/problem+json"
    assert detail in response.get_json()["detail"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def _alg_none() -> str:
    import base64

    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'at+jwt'})}.{b64({'iss': 'https://id.test', 'sub': 'x', 'scope': 'ca:issue', 'exp': 9999999999})}."
