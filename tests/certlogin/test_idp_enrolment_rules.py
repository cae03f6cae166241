"""The enrolment endpoint's rules about the access token and the request body, on their own."""

from __future__ import annotations

import time

import pytest

from idp.certlogin import enrolment


def claims(**overrides) -> dict:
    return {
        "sub": "6d349492-507e-4e1d-8bc3-580a27fefc72",
        "client_id": "hallmark-key",
        "acr": "urn:hallmark:loa:2",
        "auth_time": int(time.time()) - 30,
        "scope": "openid cert:enrol",
        **overrides,
    }


def refusal(function, *args) -> enrolment.EnrolmentRefused:
    with pytest.raises(enrolment.EnrolmentRefused) as caught:
        function(*args)
    return caught.value


def test_token_must_be_a_fresh_real_name_login():
    assert enrolment._check_authentication(claims()) == claims()["sub"]
    assert enrolment._check_authentication(claims(acr="urn:hallmark:loa:3")) == claims()["sub"]
    low = refusal(enrolment._check_authentication, claims(acr="urn:hallmark:loa:1"))
    assert (low.status, low.code) == (401, "insufficient_level") and 'acr_values="urn:hallmark:loa:2"' in low.headers["WWW-Authenticate"]
    stale = refusal(enrolment._check_authentication, claims(auth_time=int(time.time()) - enrolment.MAX_AUTH_AGE - 5))
    assert (stale.status, stale.code) == (401, "stale_authentication") and "max_age" in stale.headers["WWW-Authenticate"]
    assert refusal(enrolment._check_authentication, claims(auth_time="yesterday")).code == "stale_authentication"
    assert refusal(enrolment._check_authentication, claims(acr="urn:other:gold")).code == "insufficient_level"
    machine = {"sub": "approval", "client_id": "approval", "scope": "cert:enrol"}
    assert refusal(enrolment._check_authentication, machine).code == "not_a_person"


def test_request_body_shape():
    good = {"profile": "person-auth", "csr": "x", "name": "张三", "resident_id": "11010519491231002X"}
    assert enrolment.parse_request(good).resident_id == "11010519491231002X"
    assert enrolment.parse_request(
        {"profile": "enterprise-auth", "csr": "x", "name": "某公司", "credit_code": "91350100M000100Y43"}
    ).credit_code
    for body, code in [
        ({**good, "profile": "person-sign"}, "wrong_profile"),
        ({**good, "profile": 3}, "bad_request"),
        ({**good, "name": "  "}, "bad_request"),
        ({**good, "resident_id": None}, "bad_request"),
        ({**good, "profile": "enterprise-auth"}, "bad_request"),
        ({**good, "subject_id": "x"}, "bad_request"),
    ]:
        assert refusal(enrolment.parse_request, body).code == code, body
