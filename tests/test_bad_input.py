"""Bad input found by probing (issue 18) is a 400 or 401 in the right form, never a 500, and writes nothing.

Through the real app factory (Flask test client), on SQLite and PostgreSQL, with
access tokens from the app's own token endpoint:

* a deeply nested JSON body on every JSON API that reads one: problem+json 400;
* a deeply nested ``claims`` on ``/oauth/authorize``: the OAuth error sent back to
  the hall's redirect URI (RFC 6749 4.1.2.1);
* a deeply nested certificate chain posted to ``/login/cert``: a readable page, or
  problem+json for the page's script;
* HTTP Basic client credentials that are not UTF-8, not ASCII or not base64 on the
  token, introspection and revocation endpoints, and a client assertion with a
  deeply nested payload: ``invalid_client`` as OAuth error JSON (RFC 6749 5.2);
* ``offset``/``limit`` outside what a list API takes (13 digits, past 64 bits,
  negative, not ASCII digits): problem+json 400 before the database sees it.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, inspect, select, table

from core import db as core_db
from idp.oidc import clients

PUBLIC_URL = "https://id.test"
HALL_CB = "https://hall.test/cb"
PROBLEM = "application/problem+json"
DEEP_ARRAY = "[" * 5000  # past Python's recursion limit, within every body and field size limit
DEEP_OBJECT = '{"a":' * 3000 + "1" + "}" * 3000
API_SCOPES = {
    "/api/ca": "ca:issue ca:read ca:revoke",
    "/api/idp": "idp:counter idp:enterprises cert:enrol",
    "/api/sign": "sign:remote",
    "/api/licences": "licences:read licences:issue",
}
CREDIT_CODE = "91350100M000100Y43"
LICENCE = "35010020260000001X"


class World:
    def __init__(self, app, engine):
        self.app, self.engine = app, engine
        self.ctx = app.extensions["hallmark.services"].idp
        self.client = app.test_client()
        with core_db.transaction(self.ctx.sessions) as db:
            self.secret = clients.add(
                self.ctx,
                db,
                client_id="probe",
                name="probe",
                client_type="confidential",
                grant_types=["client_credentials"],
                scopes=[" ".join(API_SCOPES.values())],
                actor="test",
            ).client_secret
            clients.add(self.ctx, db, client_id="hall", name="hall", client_type="confidential", redirect_uris=[HALL_CB], actor="test")
        self._tokens: dict[str, str] = {}
        # The signing keys are made on first use: make them now, so that they are not what a request changed.
        jwks_uri = self.client.get("/.well-known/openid-configuration").get_json()["jwks_uri"]
        assert self.client.get(urlsplit(jwks_uri).path).get_json()["keys"]

    def bearer(self, root: str) -> dict:
        if root not in self._tokens:
            answer = self.client.post(
                "/oauth/token",
                data={"grant_type": "client_credentials", "scope": API_SCOPES[root], "resource": PUBLIC_URL + root},
                auth=("probe", self.secret),
            )
            assert answer.status_code == 200, answer.get_data(as_text=True)
            self._tokens[root] = answer.get_json()["access_token"]
        return {"Authorization": "Bearer " + self._tokens[root]}

    def rows(self) -> dict[str, int]:
        """How many rows each table holds: what a refused request must leave as it was."""
        with self.engine.connect() as connection:
            names = inspect(connection).get_table_names()
            return {name: connection.execute(select(func.count()).select_from(table(name))).scalar_one() for name in names}


# These refusals happen while the request is read, before any database is asked, so they run on SQLite only; the page
# arguments below run on both, since their 500 was PostgreSQL's integer overflow.
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def world(tmp_path, migrated):
    from hallmark.app import create_app
    from tests.conftest import app_settings

    engine, _ = migrated
    app = create_app(app_settings(tmp_path, engine.url.render_as_string(hide_password=False), HALLMARK_PUBLIC_URL=PUBLIC_URL))
    yield World(app, engine)
    app.extensions["hallmark.services"].close()


def assert_problem(response, status: int = 400) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status and body["title"]
    return body


# -- deeply nested JSON bodies ------------------------------------------------------------------

JSON_APIS = [
    ("POST", "/api/ca/certificates"),
    ("POST", "/api/ca/certificates/0A1B2C/revoke"),
    ("POST", "/api/idp/counter-verifications"),
    ("POST", "/api/idp/enterprises"),
    ("PUT", f"/api/idp/enterprises/{CREDIT_CODE}/representative"),
    ("POST", "/api/idp/enrolments"),
    ("POST", "/api/sign/remote"),
    ("POST", "/api/sign/remote/0123456789abcdef/finish"),
    ("POST", "/api/licences/compare"),
    ("POST", "/api/licences/qr"),
    ("POST", f"/api/licences/{LICENCE}/copy"),
    ("POST", "/api/licences/issue"),
    ("POST", f"/api/licences/{LICENCE}/revoke"),
    ("POST", f"/api/licences/{LICENCE}/renew"),
    ("POST", "/api/licences/requests"),
    ("POST", "/api/licences/subscriptions"),
]


@SQLITE
@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
@pytest.mark.parametrize(("method", "path"), JSON_APIS, ids=[f"{m} {p}" for m, p in JSON_APIS])
def test_deeply_nested_json_body_is_a_problem_400(world, method, path, body):
    headers = world.bearer("/" + "/".join(path.split("/")[1:3]))
    before = world.rows()
    answer = world.client.open(path, method=method, data=body, content_type="application/json", headers=headers)
    assert "nested" in assert_problem(answer)["detail"]
    assert world.rows() == before


@SQLITE
def test_json_nested_deeper_than_the_limit_is_refused_even_when_python_could_parse_it(world):
    from core import jsonlimits

    within = {"id_token": {"acr": {"essential": True, "values": ["urn:hallmark:loa:2"]}}}
    assert jsonlimits.loads('{"id_token": {"acr": {"essential": true, "values": ["urn:hallmark:loa:2"]}}}') == within
    too_deep = "[" * (jsonlimits.MAX_DEPTH + 1) + "]" * (jsonlimits.MAX_DEPTH + 1)
    assert jsonlimits.loads(too_deep[1:-1]) is not None  # exactly the limit is fine
    with pytest.raises(ValueError, match="nested"):
        jsonlimits.loads(too_deep)
    before = world.rows()
    answer = world.client.post("/api/ca/certificates", data=too_deep, content_type="application/json", headers=world.bearer("/api/ca"))
    assert "nested" in assert_problem(answer)["detail"]
    assert world.rows() == before


# -- /oauth/authorize: claims ---------------------------------------------------------------------


@SQLITE
@pytest.mark.parametrize("claims", ["[" * 3900, '{"id_token":' + "[" * 3800 + "}"], ids=["array", "object"])  # within its 4000 characters
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_deeply_nested_claims_on_authorize_is_invalid_request_at_the_redirect_uri(world, method, claims):
    params = {"response_type": "code", "client_id": "hall", "redirect_uri": HALL_CB, "scope": "openid", "state": "st-9", "claims": claims}
    before = world.rows()
    if method == "GET":
        answer = world.client.get("/oauth/authorize", query_string=params)
    else:
        answer = world.client.post("/oauth/authorize", data=params)
    assert answer.status_code == 302, answer.get_data(as_text=True)[:300]
    assert answer.location.startswith(HALL_CB + "?")
    query = parse_qs(urlsplit(answer.location).query)
    assert query["error"] == ["invalid_request"] and query["state"] == ["st-9"] and "claims" in query["error_description"][0]
    assert world.rows() == before


# -- /login/cert: the chain ------------------------------------------------------------------------


@SQLITE
@pytest.mark.parametrize("wants", ["page", "json"])
def test_deeply_nested_chain_on_cert_login_is_a_400_in_the_callers_form(world, wants):
    page = world.client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    fields = {
        "csrf_token": csrf,
        "next": "/account",
        "challenge": "x" * 43,
        "algorithm": "ecdsa-with-SHA256",
        "signature": "AAAA",
        "certificate": "AAAA",
        "chain": DEEP_ARRAY,
    }
    headers = {"Accept": "application/json"} if wants == "json" else {"Accept": "text/html"}
    before = world.rows()
    answer = world.client.post("/login/cert", data=fields, headers=headers)
    if wants == "json":
        assert_problem(answer)
    else:
        assert answer.status_code == 400 and answer.mimetype == "text/html"
        assert "chain" in answer.get_data(as_text=True) and "Traceback" not in answer.get_data(as_text=True)
    after = world.rows()
    # A refused certificate login is audited (one entry); nothing else is written: no session, no account.
    assert {name: n for name, n in after.items() if name != "audit_events"} == {
        name: n for name, n in before.items() if name != "audit_events"
    }
    assert after.get("audit_events", 0) - before.get("audit_events", 0) <= 1


# -- HTTP Basic client credentials ----------------------------------------------------------------

BAD_BASIC = {
    "not-utf8": "Basic " + base64.b64encode(b"\xff\xfe:\xc3(").decode(),
    "not-utf8-id-only": "Basic " + base64.b64encode(b"probe\xff").decode(),
    "not-ascii": "Basic " + "cHJvYmU6ñ",
    "not-base64": "Basic !!!",
    "bad-padding": "Basic cHJvYmU6eA",
}
OAUTH_ENDPOINTS = {
    "/oauth/token": {"grant_type": "client_credentials"},
    "/oauth/introspect": {"token": "x" * 40},
    "/oauth/revoke": {"token": "x" * 40},
}


@SQLITE
@pytest.mark.parametrize("credentials", BAD_BASIC, ids=list(BAD_BASIC))
@pytest.mark.parametrize("path", OAUTH_ENDPOINTS, ids=list(OAUTH_ENDPOINTS))
def test_unreadable_basic_credentials_are_invalid_client(world, path, credentials):
    before = world.rows()
    answer = world.client.post(path, data=OAUTH_ENDPOINTS[path], headers={"Authorization": BAD_BASIC[credentials]})
    assert answer.status_code == 401, answer.get_data(as_text=True)[:300]
    assert answer.mimetype == "application/json" and answer.get_json()["error"] == "invalid_client"
    assert answer.headers["WWW-Authenticate"].startswith("Basic ")
    assert answer.headers["Cache-Control"] == "no-store"
    assert world.rows() == before


@SQLITE
def test_client_assertion_with_a_deeply_nested_payload_is_invalid_client(world):
    def part(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    assertion = part('{"alg":"ES256"}') + "." + part(DEEP_ARRAY) + ".AAAA"
    before = world.rows()
    answer = world.client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
    )
    assert answer.status_code in (400, 401), answer.get_data(as_text=True)[:300]
    assert answer.mimetype == "application/json" and answer.get_json()["error"] == "invalid_client"
    assert world.rows() == before


# -- offset and limit of list APIs ----------------------------------------------------------------

LIST_APIS = ["/api/ca/certificates", "/api/idp/enterprises"]
BAD_PAGES = {
    "offset-13-digits": {"offset": "1234567890123"},
    "offset-past-64-bits": {"offset": "9" * 19},
    "offset-30-digits": {"offset": "9" * 30},
    "offset-negative": {"offset": "-1"},
    "offset-not-ascii": {"offset": "١٢"},
    "offset-underscore": {"offset": "1_000"},
    "limit-13-digits": {"limit": "1234567890123"},
    "limit-past-64-bits": {"limit": "9" * 25},
    "limit-negative": {"limit": "-5"},
    "limit-zero": {"limit": "0"},
}


@pytest.mark.parametrize("args", BAD_PAGES, ids=list(BAD_PAGES))
@pytest.mark.parametrize("path", LIST_APIS)
def test_offset_and_limit_out_of_range_are_a_problem_400(world, path, args):
    headers = world.bearer("/" + "/".join(path.split("/")[1:3]))
    fine = world.client.get(path, query_string={"offset": "3", "limit": "10"}, headers=headers)
    assert fine.status_code == 200 and fine.get_json()["offset"] == 3 and fine.get_json()["limit"] == 10
    before = world.rows()
    body = assert_problem(world.client.get(path, query_string=BAD_PAGES[args], headers=headers))
    assert next(iter(BAD_PAGES[args])) in body["detail"]
    assert world.rows() == before
