"""core.bearer.BearerVerifier keeps the claims of tokens it has checked, without weakening any check.

A token seen before is not verified again, but its audience is still checked on
each call, an expired one is still refused, and a change of the key set drops
what was checked with the old keys.
"""

from __future__ import annotations

import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from core import bearer
from core.problems import Problem

ISSUER = "https://id.test"
AUDIENCE = "https://id.test/api/test"


def key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)


def mint(signing_key: ECKey, exp_in: int = 300) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "client-1", "aud": AUDIENCE, "scope": "ca:issue", "exp": now + exp_in, "iat": now}
    return jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": signing_key.kid}, claims, signing_key)


def test_a_token_seen_before_gives_the_same_claims_and_a_caller_cannot_change_them():
    signing_key = key("k1")
    verifier = bearer.BearerVerifier({"keys": [signing_key.as_dict(private=False)]}, issuer=ISSUER)
    token = mint(signing_key)
    first = verifier.verify(token, audience=AUDIENCE)
    first["scope"] = "everything"
    second = verifier.verify(token, audience=AUDIENCE)
    assert second["scope"] == "ca:issue" and second["sub"] == "client-1"


def test_the_audience_is_checked_on_every_call():
    signing_key = key("k1")
    verifier = bearer.BearerVerifier({"keys": [signing_key.as_dict(private=False)]}, issuer=ISSUER)
    token = mint(signing_key)
    verifier.verify(token, audience=AUDIENCE)
    with pytest.raises(Problem) as refused:
        verifier.verify(token, audience="https://id.test/api/ca")
    assert refused.value.status == 401 and "not meant for this API" in refused.value.detail


def test_a_cached_token_is_refused_once_expired():
    signing_key = key("k1")
    verifier = bearer.BearerVerifier({"keys": [signing_key.as_dict(private=False)]}, issuer=ISSUER, leeway=60)
    token = mint(signing_key, exp_in=-30)  # expired, but within the leeway
    verifier.verify(token, audience=AUDIENCE)
    verifier.leeway = 0  # now past its expiry as the verifier counts it: the cached claims must not be served
    with pytest.raises(Problem) as refused:
        verifier.verify(token, audience=AUDIENCE)
    assert refused.value.status == 401 and "expired" in refused.value.detail


def test_a_changed_key_set_drops_what_the_old_keys_vouched_for():
    old, new = key("k1"), key("k2")
    current = {"jwks": {"keys": [old.as_dict(private=False)]}}
    verifier = bearer.BearerVerifier(lambda: current["jwks"], issuer=ISSUER)
    token = mint(old)
    verifier.verify(token, audience=AUDIENCE)
    current["jwks"] = {"keys": [new.as_dict(private=False)]}  # k1 taken out
    with pytest.raises(Problem) as refused:
        verifier.verify(token, audience=AUDIENCE)
    assert refused.value.status == 401
    assert verifier.verify(mint(new), audience=AUDIENCE)["sub"] == "client-1"


def test_the_cache_is_bounded():
    signing_key = key("k1")
    verifier = bearer.BearerVerifier({"keys": [signing_key.as_dict(private=False)]}, issuer=ISSUER)
    for n in range(5):
        verifier.verify(mint(signing_key, exp_in=300 + n), audience=AUDIENCE)
    assert len(verifier._verified) == 5
    old_size, bearer.VERIFIED_CACHE_SIZE = bearer.VERIFIED_CACHE_SIZE, 3
    try:
        verifier.verify(mint(signing_key, exp_in=400), audience=AUDIENCE)
        assert len(verifier._verified) == 3
    finally:
        bearer.VERIFIED_CACHE_SIZE = old_size
