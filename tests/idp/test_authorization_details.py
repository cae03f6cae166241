"""Rich authorization requests (RFC 9396) through the real app: a component declares a detail type, the IdP honours it.

A small extra component declares the ``test_licence`` type (as the licence library
will declare its own); the authorization code flow is driven over the Flask test
client: an unknown or refused detail goes back to the client as
``invalid_authorization_details``; a request with details always shows the consent
page (first-party client, or scopes agreed to before), listing each detail; agreeing
gives a code whose tokens carry the details (claim, token response, introspection),
with the type's API in the audience and its scope in the scope; a refresh gives the
same details, or a subset named, never more.
"""

from __future__ import annotations

import itertools
import json
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from core import audit
from core.authorization_details import MAX_DETAILS, MAX_JSON_BYTES, DetailType, InvalidDetail
from core.component import Component
from core.models import AuditEvent
from idp.models import AuthorizationCode, RefreshToken
from tests.idp.test_idp_oidc_protocol import CB, ISSUER, World, decode, query_of

LOCATION = "/api/test-licences"
API = ISSUER + LOCATION
SCOPE = "testlicences:holder"


def _check(detail: dict) -> dict:
    actions = detail.get("actions", ["compare"])
    if not isinstance(actions, list) or not actions or not set(actions) <= {"compare", "read"}:
        raise InvalidDetail("actions must be compare or read")
    matter = detail.get("matter")
    if not isinstance(matter, str) or not matter:
        raise InvalidDetail("a matter is required")
    purpose = detail.get("purpose", "")
    if not isinstance(purpose, str) or len(purpose) > 200:
        raise InvalidDetail("the purpose must be text of at most 200 characters")
    return {"type": "test_licence", "actions": sorted(set(actions)), "matter": matter, "purpose": purpose}


def _describe(detail: dict) -> list[str]:
    return [f"比对您的测试证照（{'、'.join(detail['actions'])}）", f"用于事项 {detail['matter']}：{detail['purpose']}"]


_CHECKS = itertools.count()


def _stamped(detail: dict) -> dict:
    """A type whose check depends on when it runs (as an expiry it adds would): it is never run again on a refresh."""
    if set(detail) != {"type", "matter"}:
        raise InvalidDetail("only a matter")
    return {**detail, "checked": next(_CHECKS)}


TEST_TYPE = DetailType(type="test_licence", location=LOCATION, check=_check, describe=_describe, scope=SCOPE)
STAMPED = DetailType(type="test_stamped", location="/api/test-stamped", check=_stamped, describe=lambda d: [f"事项 {d['matter']}"])
EXTRA = Component(name="detailtest", depends_on=("idp",), authorization_details=lambda: [TEST_TYPE, STAMPED])
DETAIL = {"type": "test_licence", "actions": ["compare"], "matter": "tax-filing", "purpose": "核对营业执照"}
GRANTED = {"type": "test_licence", "actions": ["compare"], "matter": "tax-filing", "purpose": "核对营业执照"}


@pytest.fixture
def rar(tmp_path, migrated, key_manager):
    from hallmark.app import create_app
    from hallmark.components import COMPONENTS
    from tests.conftest import app_settings

    engine, _ = migrated
    settings = app_settings(tmp_path, engine.url.render_as_string(hide_password=False), HALLMARK_PUBLIC_URL=ISSUER)
    app = create_app(settings, components=(*COMPONENTS, EXTRA))
    yield World(app)
    app.extensions["hallmark.services"].close()


def details(*items) -> str:
    return json.dumps(list(items), ensure_ascii=False)


def consent_form(world, location: str) -> tuple[str, str, str]:
    """(page html, next, form token) of the consent page ``location`` leads to."""
    assert location.startswith("/consent?"), location
    page = world.browser.get(location)
    assert page.status_code == 200, page.get_data(as_text=True)
    html = page.get_data(as_text=True)
    return html, query_of(location)["next"], html.split('name="form_token" value="')[1].split('"')[0]


def agree(world, location: str):
    _, next_url, token = consent_form(world, location)
    return world.browser.post("/consent", data={"next": next_url, "form_token": token, "decision": "allow"})


def audit_details(world, action: str) -> list[dict]:
    with world.ctx.sessions() as db:
        assert audit.verify(db).ok
        return [json.loads(e.details) for e in db.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq))]


# -- the request ---------------------------------------------------------------------------------


def test_discovery_names_the_registered_types(rar):
    meta = rar.rp.get("/.well-known/openid-configuration").get_json()
    assert "test_licence" in meta["authorization_details_types_supported"]


@pytest.mark.parametrize(
    "value, says",
    [
        (details({"type": "licence_unknown", "matter": "x"}), "unknown type 'licence_unknown'"),
        (details({"matter": "x"}), "has no 'type'"),
        (details("test_licence"), "is not a JSON object"),
        (json.dumps({"type": "test_licence", "matter": "x"}), "non-empty JSON array"),
        ("[]", "non-empty JSON array"),
        ("[{not json", "not valid JSON"),
        ('[{"type": "test_licence", "matter": NaN}]', "not valid JSON"),
        ("[" * 1500 + "]" * 1500, "not valid JSON"),
        (details(*[DETAIL] * (MAX_DETAILS + 1)), f"At most {MAX_DETAILS}"),
        (details({**DETAIL, "purpose": "用" * 200, "padding": "填" * 1200}), f"longer than {MAX_JSON_BYTES} bytes"),
        (details({**DETAIL, "actions": ["delete"]}), "(test_licence): actions must be compare or read"),
        (details({**DETAIL, "matter": ""}), "(test_licence): a matter is required"),
    ],
)
def test_unknown_or_refused_details_go_back_to_the_client(rar, value, says):
    rar.client()
    rar.login(rar.account())
    response = rar.authorize(authorization_details=value)
    assert response.status_code == 302 and response.location.startswith(CB + "?")
    answer = query_of(response.location)
    assert answer["error"] == "invalid_authorization_details" and answer["state"] == "st-1" and answer["iss"] == ISSUER
    assert says in answer["error_description"]


# -- consent, code and tokens --------------------------------------------------------------------


def test_first_party_client_still_asks_and_the_tokens_carry_the_details(rar):
    secret = rar.client()  # first-party: no consent page for scopes
    account = rar.account(proofed=True)
    rar.login(account)
    assert "code" in query_of(rar.authorize().location)  # without details: straight back with a code

    assert query_of(rar.authorize(prompt="none", authorization_details=details(DETAIL)).location)["error"] == "consent_required"
    to_consent = rar.authorize(authorization_details=details(DETAIL))
    html, next_url, token = consent_form(rar, to_consent.location)
    assert "Hall hall" in html and "还请求您同意以下事项" in html
    assert (
        'data-detail-type="test_licence"' in html and "比对您的测试证照（compare）" in html and "用于事项 tax-filing：核对营业执照" in html
    )

    allowed = rar.browser.post("/consent", data={"next": next_url, "form_token": token, "decision": "allow"})
    assert allowed.status_code == 302 and allowed.location.startswith(CB + "?")  # the code comes with the answer itself
    code = query_of(allowed.location)["code"]
    with rar.ctx.sessions() as db:
        row = db.scalars(select(AuthorizationCode).where(AuthorizationCode.authorization_details.is_not(None))).one()
        assert json.loads(row.authorization_details) == [GRANTED] and SCOPE in row.scope.split()
    [event] = audit_details(rar, "idp.consent.details_granted")
    assert event == {"client": "hall", "types": ["test_licence"], "matters": ["tax-filing"]}  # no personal data

    body = rar.token({"grant_type": "authorization_code", "code": code, "redirect_uri": CB}, "hall", secret).get_json()
    assert body["authorization_details"] == [GRANTED]
    assert body["scope"].split() == ["openid", "profile", SCOPE]
    claims = decode(rar, body["access_token"]).claims
    assert claims["authorization_details"] == [GRANTED]
    assert claims["aud"] == [ISSUER, API] and claims["scope"] == body["scope"]
    assert "authorization_details" not in decode(rar, body["id_token"]).claims
    introspected = rar.introspect(body["access_token"], "hall", secret)
    assert introspected["active"] is True and introspected["authorization_details"] == [GRANTED]
    assert rar.introspect(body["refresh_token"], "hall", secret)["authorization_details"] == [GRANTED]
    userinfo = rar.rp.get("/oauth/userinfo", headers={"Authorization": "Bearer " + body["access_token"]})
    assert userinfo.status_code == 200  # the issuer stays in the audience

    # A refresh gives the same details; naming them (a subset of what was granted) too; anything else is refused.
    refreshed = rar.token({"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}, "hall", secret).get_json()
    assert refreshed["authorization_details"] == [GRANTED]
    again = decode(rar, refreshed["access_token"]).claims
    assert again["authorization_details"] == [GRANTED] and again["aud"] == [ISSUER, API]
    named = rar.token(
        {"grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"], "authorization_details": details(DETAIL)},
        "hall",
        secret,
    ).get_json()
    assert named["authorization_details"] == [GRANTED]
    wider = rar.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": named["refresh_token"],
            "authorization_details": details({**DETAIL, "actions": ["compare", "read"]}),
        },
        "hall",
        secret,
    )
    assert wider.status_code == 400 and wider.get_json()["error"] == "invalid_authorization_details"
    # The refused request left the refresh token usable, and it still holds everything granted.
    last = rar.token({"grant_type": "refresh_token", "refresh_token": named["refresh_token"]}, "hall", secret).get_json()
    assert last["authorization_details"] == [GRANTED]
    with rar.ctx.sessions() as db:
        assert {r.authorization_details for r in db.scalars(select(RefreshToken))} == {
            json.dumps([GRANTED], ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        }

    # Consent to details is not remembered: the next request with them asks again.
    assert rar.authorize(authorization_details=details(DETAIL)).location.startswith("/consent?")


def test_third_party_client_with_scopes_agreed_before_is_asked_again_and_may_be_refused(rar):
    rar.client("thirdparty", first_party=False)
    rar.login(rar.account())
    assert "code" in query_of(rar.browser.get(agree(rar, rar.authorize("thirdparty").location).location).location)
    assert "code" in query_of(rar.authorize("thirdparty").location)  # scopes remembered
    to_consent = rar.authorize("thirdparty", authorization_details=details(DETAIL))
    _, next_url, token = consent_form(rar, to_consent.location)
    denied = rar.browser.post("/consent", data={"next": next_url, "form_token": token, "decision": "deny"})
    assert query_of(denied.location)["error"] == "access_denied"
    assert audit_details(rar, "idp.consent.details_granted") == []


def test_a_refresh_may_name_a_subset_of_what_was_granted_never_more(rar):
    secret = rar.client()
    rar.login(rar.account())
    asked = details({"type": "test_stamped", "matter": "m1"}, {"type": "test_stamped", "matter": "m2"}, DETAIL)
    code = query_of(agree(rar, rar.authorize(authorization_details=asked).location).location)["code"]
    body = rar.token({"grant_type": "authorization_code", "code": code, "redirect_uri": CB}, "hall", secret).get_json()
    first, second, licence = body["authorization_details"]
    assert first["matter"] == "m1" and second["matter"] == "m2" and licence == GRANTED and "checked" in first

    def refresh(token, value=None):
        form = {"grant_type": "refresh_token", "refresh_token": token}
        if value is not None:
            form["authorization_details"] = value
        return rar.token(form, "hall", secret)

    # As copied from the token response, or by some of its members: the granted detail, unchanged.
    one = refresh(body["refresh_token"], details(second)).get_json()
    assert one["authorization_details"] == [second]
    claims = decode(rar, one["access_token"]).claims
    assert claims["authorization_details"] == [second] and claims["aud"] == [ISSUER, ISSUER + "/api/test-stamped"]
    both = refresh(one["refresh_token"], details({"type": "test_stamped"})).get_json()
    assert both["authorization_details"] == [first, second]
    for wider in (details({**second, "matter": "m3"}), details({"type": "test_licence", "actions": ["read"]}), '[{"matter": "m1"}]', "[]"):
        refused = refresh(both["refresh_token"], wider)
        assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_authorization_details", wider
    assert refresh(both["refresh_token"]).get_json()["authorization_details"] == [first, second, licence]  # a subset was for one token


def test_token_request_may_name_the_details_api_as_its_resource(rar):
    secret = rar.client()
    rar.login(rar.account())
    code = query_of(agree(rar, rar.authorize(authorization_details=details(DETAIL)).location).location)["code"]
    body = rar.token({"grant_type": "authorization_code", "code": code, "redirect_uri": CB, "resource": API}, "hall", secret)
    assert body.status_code == 200, body.get_data(as_text=True)
    assert decode(rar, body.get_json()["access_token"]).claims["aud"] == API


def test_a_code_without_details_gives_tokens_without_them(rar):
    secret = rar.client()
    rar.login(rar.account())
    body = rar.token({"grant_type": "authorization_code", "code": rar.code(), "redirect_uri": CB}, "hall", secret).get_json()
    assert "authorization_details" not in body and "authorization_details" not in decode(rar, body["access_token"]).claims
    asked = rar.token(
        {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "authorization_details": details(DETAIL)}, "hall", secret
    )
    assert asked.status_code == 400 and asked.get_json()["error"] == "invalid_authorization_details"


def test_a_long_request_survives_the_login_round_trip(rar):
    rar.client()
    account = rar.account()
    big = [{**DETAIL, "purpose": "核对营业执照和食品经营许可证" * 14, "matter": f"matter-{n}"} for n in range(MAX_DETAILS)]
    value = details(*big)
    assert 3000 < len(value.encode()) <= MAX_JSON_BYTES
    to_login = rar.authorize(authorization_details=value)
    assert urlsplit(to_login.location).path == "/login"
    assert rar.browser.get(to_login.location).status_code == 200  # the login page follows such a next
    rar.login(account)
    to_consent = rar.browser.get(query_of(to_login.location)["next"])
    html, _, _ = consent_form(rar, to_consent.location)
    assert html.count('data-detail-type="test_licence"') == MAX_DETAILS
    answer = agree(rar, to_consent.location)
    assert "code" in query_of(answer.location)
    [event] = audit_details(rar, "idp.consent.details_granted")
    assert event["matters"] == [f"matter-{n}" for n in range(MAX_DETAILS)]


def test_the_audit_summary_keeps_types_and_matters_with_resident_ids_masked():
    from datetime import date

    from core.identifiers import generate_resident_id, mask_resident_id
    from idp.oidc.authorization_details import summary

    rid = generate_resident_id("110101", date(1990, 1, 1), 1)
    granted = [{"type": "a", "matter": f"申请人{rid}", "purpose": "核对"}, {"type": "b", "matters": ["m2", 3, ""]}, {"type": "a"}]
    assert summary(granted) == {"types": ["a", "b"], "matters": [f"申请人{mask_resident_id(rid)}", "m2"]}
