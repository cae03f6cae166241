"""The people JSON API through the real app factory: counter verification (scope idp:counter) and matters (public)."""

from __future__ import annotations

import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from core import db
from idp import levels
from idp.people import accounts, realname
from tests.conftest import app_settings

PERSON = realname.demo_people(3)[2]


@pytest.fixture
def api(tmp_path, migrated):
    from hallmark.app import create_app

    engine, _ = migrated
    settings = app_settings(tmp_path, engine.url.render_as_string(hide_password=False))
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    app = create_app(settings, bearer_jwks={"keys": [key.as_dict(private=False)]})
    ctx = app.extensions["hallmark.services"].idp
    with db.transaction(ctx.sessions) as s:
        accounts.register(s, identifier="clerk01", password="Clerk horse 42", roles=("clerk",))
        accounts.register(s, identifier="resident1", password="Correct horse 42")
        accounts.register(s, identifier="plainuser", password="Correct horse 42")
        for code, name, level, department in levels.DEMO_MATTERS:
            levels.set_matter(s, code, level=level, name=name, department=department, actor="test")

    def token(scope):
        claims = {
            "iss": "https://id.test",
            "aud": "https://id.test/api/idp",
            "sub": "console",
            "client_id": "console",
            "scope": scope,
            "exp": int(time.time()) + 300,
        }
        return {"Authorization": "Bearer " + jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}, claims, key)}

    yield app.test_client(), token, ctx
    app.extensions["hallmark.services"].close()


def body(**overrides):
    return {
        "account": "resident1",
        "resident_id": PERSON.resident_id,
        "name": PERSON.name,
        "clerk": "clerk01",
        "location": "市民中心 5号窗口",
        "document": "resident-card",
        **overrides,
    }


def test_counter_verification_api(api):
    client, token, ctx = api
    url = "/api/idp/counter-verifications"
    assert client.post(url, json=body()).status_code == 401
    assert client.post(url, json=body(), headers=token("ca:read")).status_code == 403
    refused = client.post(url, json=body(clerk="plainuser"), headers=token("idp:counter"))
    assert refused.status_code == 403 and refused.mimetype == "application/problem+json"
    assert refused.get_json()["code"] == "not_a_clerk" and "not an active counter clerk" in refused.get_json()["detail"]
    wrong_check = PERSON.resident_id[:-1] + ("0" if PERSON.resident_id[-1] != "0" else "1")
    bad = client.post(url, json=body(resident_id=wrong_check), headers=token("idp:counter"))
    assert bad.status_code == 400 and bad.get_json()["code"] == "resident_id_checksum"
    assert client.post(url, json=body(location=7), headers=token("idp:counter")).status_code == 400
    assert client.post(url, data="not json", headers=token("idp:counter")).status_code == 400

    created = client.post(url, json=body(), headers=token("idp:counter"))
    assert created.status_code == 201, created.get_json()
    result = created.get_json()
    assert result["verified"] and result["method"] == "counter" and result["location"] == "市民中心 5号窗口"
    assert result["resident_id"] == PERSON.resident_id[:3] + "*" * 11 + PERSON.resident_id[-4:]
    assert PERSON.resident_id not in created.get_data(as_text=True)

    proofing = client.get(created.headers["Location"], headers=token("idp:counter"))
    assert proofing.status_code == 200 and proofing.get_json() == result
    assert client.get(created.headers["Location"]).status_code == 401
    with ctx.sessions() as s:
        plain = accounts.find(s, "plainuser")
    assert client.get(f"/api/idp/accounts/{plain.id}/proofing", headers=token("idp:counter")).get_json() == {
        "account_id": plain.id,
        "verified": False,
    }
    assert client.get("/api/idp/accounts/nobody/proofing", headers=token("idp:counter")).status_code == 404

    again = client.post(url, json=body(account="plainuser"), headers=token("idp:counter"))
    assert again.status_code == 409 and again.get_json()["code"] == "already_bound"


def test_matters_api_is_public(api):
    client, _, _ = api
    listed = client.get("/api/idp/matters")
    assert listed.status_code == 200
    codes = {m["code"]: m for m in listed.get_json()["matters"]}
    assert codes["marriage-registration"]["level"] == 3 and codes["marriage-registration"]["name"] == "婚姻登记"
    assert codes["policy-enquiry"]["acr"] == "urn:hallmark:loa:1"
    one = client.get("/api/idp/matters/sole-trader-registration")
    assert one.status_code == 200 and one.get_json()["level"] == 2 and one.get_json()["department"] == "市场监督管理局"
    missing = client.get("/api/idp/matters/no-such-matter")
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
