"""The OpenAPI document of every JSON API (``/api/openapi.json``), its page, and Schemathesis over it.

* The document is valid OpenAPI 3.1 (Schemathesis checks it against the 3.1
  meta-schema, and every schema in it is a valid JSON Schema 2020-12), and it
  describes every route of the app under ``/api`` with each of its methods, and
  nothing the app does not serve: a new API cannot be left out.
* The page ``/developers/api`` renders every operation from the document on the
  server, in Chinese first and in English, with no script and nothing from elsewhere.
* Schemathesis, against a real ``hallmark serve`` on 127.0.0.1, sends a bounded
  number of generated requests (valid and invalid, a fixed seed) to every
  operation with an access token for its API, and checks that none is answered
  5xx and that every answer has a documented status, content type and schema.
"""

from __future__ import annotations

import json
import re

import pytest
import requests
import schemathesis
from jsonschema import Draft202012Validator
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from core import openapi
from tests.catalogue_checks import gaps, msgids
from tests.conftest import ROOT, initialised_copy, run_hallmark, start_server, stop_server
from tests.signing_fixtures import DEPARTMENT, DEPARTMENT_CODE

PUBLIC_URL = "https://id.test"
# Every scope a JSON API checks, by API root: the fuzzing client may ask for all of them.
API_SCOPES = {
    "/api/ca": "ca:issue ca:read ca:revoke",
    "/api/idp": "idp:counter idp:enterprises cert:enrol",
    "/api/sign": "sign:seal sign:validate sign:remote",
    "/api/licences": "licences:read licences:issue",
}
MAX_EXAMPLES = 4  # per operation and phase (Schemathesis adds its coverage cases: about 1,500 requests in all)
SEED = 20261206


# -- the document -------------------------------------------------------------------------------


SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the document does not depend on the database


@pytest.fixture
def app(tmp_path, migrated):
    from hallmark.app import create_app
    from tests.conftest import app_settings

    engine, _ = migrated
    app = create_app(app_settings(tmp_path, engine.url.render_as_string(hide_password=False), HALLMARK_PUBLIC_URL=PUBLIC_URL))
    yield app
    app.extensions["hallmark.services"].close()


def _templated(rule: str) -> str:
    """A Flask rule in OpenAPI's path template form: ``/a/<int:b>`` -> ``/a/{b}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _schemas(node):
    """Every JSON Schema in the document (under a ``schema`` key or in ``components.schemas``)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                yield value
            elif key == "schemas" and isinstance(value, dict):
                yield from value.values()
            yield from _schemas(value)
    elif isinstance(node, list):
        for item in node:
            yield from _schemas(item)


@SQLITE
def test_the_document_is_valid_openapi_31_and_describes_every_api_route(app):
    answer = app.test_client().get("/api/openapi.json")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    document = answer.get_json()
    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()  # the OpenAPI 3.1 meta-schema
    found = list(_schemas(document))
    assert len(found) > 100
    for schema in found:
        Draft202012Validator.check_schema(schema)

    served = {
        (method.lower(), _templated(rule.rule))
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
        if rule.endpoint != "static"
    }
    described = {(method, path) for method, path, _ in openapi.operations(document)}
    api = {(method, path) for method, path in served if path.startswith("/api/")}
    assert api - described == set(), "JSON API routes missing from /api/openapi.json"
    assert described - served == set(), "operations in /api/openapi.json that the app does not serve"
    # The OAuth endpoints that answer JSON are described too.
    for path in (
        "/oauth/token",
        "/oauth/introspect",
        "/oauth/revoke",
        "/oauth/userinfo",
        "/.well-known/openid-configuration",
        "/jwks.json",
    ):
        assert path in document["paths"], path

    # Every operation guarded by a bearer token names the scopes of its API and answers 401 and 403 as problems.
    scopes = document["components"]["securitySchemes"][openapi.OAUTH]["flows"]["clientCredentials"]["scopes"]
    for method, path, operation in openapi.operations(document):
        for requirement in operation["security"]:
            assert set(requirement.get(openapi.OAUTH, ())) <= set(scopes), (method, path)
        if path.startswith("/api/") and operation["security"]:
            root = next(root for root in API_SCOPES if path.startswith(root) or (root == "/api/sign" and path == "/api/validate"))
            assert set(operation["security"][0][openapi.OAUTH]) <= set(API_SCOPES[root].split()), (method, path)
            assert {"401", "403"} <= set(operation["responses"]), (method, path)


def test_two_components_describing_one_operation_stop_the_app_being_built():
    one = openapi.part({"/api/x": {"get": openapi.operation("x1", "X", tag="t", responses={"200": {"description": "ok"}})}})
    other = openapi.part({"/api/x": {"get": openapi.operation("x2", "X", tag="t", responses={"200": {"description": "ok"}})}})
    with pytest.raises(ValueError, match="two components describe GET /api/x"):
        openapi.merge([one, other], title="t", version="0", description="", token_url="/t", authorize_url="/a")


# -- the page -----------------------------------------------------------------------------------


@SQLITE
@pytest.mark.parametrize(
    "lang, heading, summary",
    [("zh", "接口参考", "用证书签名请求签发证书"), ("en", "API reference", "Issue a certificate from a certificate signing request")],
)
def test_the_page_shows_every_operation_in_the_readers_language(app, lang, heading, summary):
    client = app.test_client()
    document = client.get("/api/openapi.json").get_json()
    page = client.get(f"/developers/api?lang={lang}")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert f'<h1 id="api-h">{heading}</h1>' in html
    assert summary in html
    for method, path, operation in openapi.operations(document):
        assert f'id="{operation["operationId"]}"' in html, (method, path)
        assert f"<code>{path}</code>" in html
    assert "<script" not in html  # rendered on the server: nothing to run, nothing fetched from a CDN
    assert not re.search(r"""(src|href)=["']https?://""", html)
    # The landing page leads to it.
    assert 'href="/developers/api"' in client.get(f"/?lang={lang}").get_data(as_text=True)


def test_every_summary_and_string_of_the_page_has_a_chinese_translation():
    sources = [ROOT / "hallmark" / "openapi.py", *sorted(ROOT.glob("*/openapi.py"))]
    sources = [path for path in sources if path.parent.name != "core"]
    assert {path.parent.name for path in sources} >= {"hallmark", "ca", "idp", "signing", "licenses"}
    wanted = msgids(sources, [ROOT / "hallmark" / "templates" / "hallmark" / "api.html"])
    assert len(wanted) > 60
    assert gaps(ROOT / "hallmark" / "translations", wanted) == []


# -- Schemathesis against a running server ------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = initialised_copy(tmp_path_factory.mktemp("openapi") / "instance")
    scopes = " ".join(API_SCOPES.values())
    added = run_hallmark(
        instance,
        "idp",
        "client",
        "add",
        "--json",
        "--name",
        "接口测试",
        "--client-id",
        "fuzzer",
        "--grant",
        "client_credentials",
        "--scope",
        scopes,
    )
    assert added.returncode == 0, added.stderr
    secret = json.loads(added.stdout)["client_secret"]
    # A seal the client may use, so that sealing requests reach the PDF they carry instead of stopping at 403.
    # The demo matters, so that the catalogue answers with matters in it.
    for args in (
        ("sign", "seal", "add", "--department", DEPARTMENT, "--credit-code", DEPARTMENT_CODE),
        ("sign", "seal", "grant", "fuzzer", DEPARTMENT_CODE),
        ("idp", "matter", "demo"),
    ):
        done = run_hallmark(instance, *args)
        assert done.returncode == 0, done.stdout + done.stderr
    log = instance / "serve.log"
    process, base = start_server(instance, workers=2, log=log)
    try:
        tokens = {}
        for root, wanted in API_SCOPES.items():
            answer = requests.post(
                base + "/oauth/token",
                data={"grant_type": "client_credentials", "scope": wanted, "resource": base + root},
                auth=("fuzzer", secret),
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            tokens[root] = answer.json()["access_token"]
        served = requests.get(base + "/api/openapi.json", timeout=10).json()
        assert served == _built(base), "the server serves another document than the one the tests are generated from"
        yield {"base": base, "tokens": tokens, "client": ("fuzzer", secret), "log": log}
    finally:
        stop_server(process)


def _headers(server, path: str) -> dict:
    """The Authorization header a well-behaved caller of ``path`` sends."""
    if path in ("/oauth/token", "/oauth/introspect", "/oauth/revoke"):
        return {"Authorization": requests.auth._basic_auth_str(*server["client"])}
    root = "/api/sign" if path == "/api/validate" else next((r for r in API_SCOPES if path.startswith(r + "/") or path == r), None)
    return {"Authorization": "Bearer " + server["tokens"][root]} if root else {}


def _built(public_url: str) -> dict:
    from hallmark import openapi as description
    from hallmark.components import COMPONENTS

    return description.build(COMPONENTS, public_url)


def _schema():
    """The document the tests are generated from: built from the component list as the server builds it (its
    public URL aside, which only names the token endpoint); the server fixture checks that it serves the same."""
    loaded = schemathesis.openapi.from_dict(_built(PUBLIC_URL))
    loaded.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")
    loaded.config.seed = SEED
    return loaded


schema = _schema()
# The PDF endpoints take the file as the body: generated bytes go on the wire as they are.
schemathesis.serializer.alias("application/pdf", "application/octet-stream")


@pytest.mark.slow
@schema.parametrize()
# One more parametrization gives every operation's test an id of its own under pytest 9, which builds a test's
# id from its original name and parameters only; without it the operations share one id and pytest-xdist runs
# just one of them.
@pytest.mark.parametrize("seed", [SEED])
def test_no_5xx_and_every_answer_as_documented(case, server, seed):
    headers = _headers(server, case.path)
    try:
        case.call_and_validate(
            base_url=server["base"],
            headers=headers,
            timeout=30,
            checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
        )
    except Exception:
        # The server's own account of a 500, for whoever reads the failure.
        print(server["log"].read_text(errors="replace")[-4000:])
        raise


def test_answers_on_the_success_paths_are_as_documented(server):
    """What generated requests seldom reach (a certificate issued and revoked, a PDF sealed and validated, a
    matter and an enterprise found) is checked too: each answer against its operation in the document."""
    from tests.ca.test_ca_issuance import RESIDENT, csr_for
    from tests.signing_fixtures import make_pdf, valid_credit_code

    base, tokens = server["base"], server["tokens"]

    def call(method: str, path: str, template: str, root: str | None, status: int, headers=None, **kwargs) -> requests.Response:
        headers = {**(headers or {}), **({"Authorization": "Bearer " + tokens[root]} if root else {})}
        answer = requests.request(method, base + path, headers=headers, timeout=60, **kwargs)
        assert answer.status_code == status, (method, path, answer.text[:300])
        schema[template][method].validate_response(answer)
        return answer

    body = {"profile": "person-auth", "csr": csr_for()[0].decode(), "subject_id": RESIDENT, "name": "李四"}
    serial = call("POST", "/api/ca/certificates", "/api/ca/certificates", "/api/ca", 201, json=body).json()["serial"]
    call("GET", f"/api/ca/certificates/{serial}", "/api/ca/certificates/{serial}", "/api/ca", 200)
    call("GET", "/api/ca/certificates?status=valid&limit=5", "/api/ca/certificates", "/api/ca", 200)
    revoked = call(
        "POST",
        f"/api/ca/certificates/{serial}/revoke",
        "/api/ca/certificates/{serial}/revoke",
        "/api/ca",
        200,
        json={"reason": "superseded"},
    )
    assert revoked.json()["status"] == "revoked"

    sealed = call("POST", "/api/sign/pdf", "/api/sign/pdf", "/api/sign", 200, data=make_pdf(), headers={"Content-Type": "application/pdf"})
    document_id = sealed.headers["Hallmark-Document-Id"]
    call("GET", f"/api/sign/documents/{document_id}", "/api/sign/documents/{document_id}", None, 200)
    report = call(
        "POST", "/api/validate", "/api/validate", "/api/sign", 200, data=sealed.content, headers={"Content-Type": "application/pdf"}
    )
    assert report.json()["signatures"][0]["hallmark_document"]["id"] == document_id

    matters = call("GET", "/api/idp/matters", "/api/idp/matters", None, 200).json()["matters"]
    call("GET", f"/api/idp/matters/{matters[0]['code']}", "/api/idp/matters/{code}", None, 200)
    code = valid_credit_code("91350100M00017AP")
    missing = requests.post(
        base + "/api/idp/enterprises",
        json={"credit_code": code, "name": "接口测试有限公司", "representative": "nobody-here"},
        headers={"Authorization": "Bearer " + tokens["/api/idp"]},
        timeout=10,
    )
    assert missing.status_code in (404, 422) and missing.headers["Content-Type"] == openapi.PROBLEM_MEDIA_TYPE
    schema["/api/idp/enterprises"]["POST"].validate_response(missing)


def test_every_operation_is_fuzzed_under_an_id_of_its_own(request):
    """Tests that share an id are run once by pytest-xdist: every operation's test must have its own (see ``seed``)."""
    fuzzed = [item.nodeid for item in request.session.items if item.name.startswith("test_no_5xx_and_every_answer_as_documented")]
    if len(fuzzed) < 2:
        pytest.skip("fewer than two Schemathesis tests are part of this run")
    assert len(set(fuzzed)) == len(fuzzed)
