"""Standing grants, the hash-chained access log, use receipts and the consent detail type, on a real database and token.

Receipts are checked with ``cryptography`` alone from the published JWK, not with the library's own verifier.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from sqlalchemy import select, text

from core import db
from core.authorization_details import InvalidDetail
from core.models import AuditEvent

PUBLIC_URL = "https://zw.example.gov.cn"
TYPE = "11100000000013952E001"  # the demo business licence
OTHER_TYPE = "11100000000013952E002"
HOLDER = hashlib.sha256(b"holder").hexdigest()


@pytest.fixture
def sessions(migrated):
    from licenses import catalogue

    _, factory = migrated
    with db.transaction(factory) as session:
        for name in ("business-licence.json", "food-business-permit.json"):
            catalogue.add(session, catalogue.read_file(catalogue.DEMO_TYPES / name), actor="test")
    return factory


@pytest.fixture
def ctx(key_manager):
    from licenses.context import LicencesContext

    return LicencesContext(signing=None, keys=key_manager, public_url=PUBLIC_URL, lookup_key=b"k" * 16)


def _append(session, **changes):
    from licenses import accesslog

    values = {
        "client_id": "market-approval",
        "holder_hash": HOLDER,
        "identifier": "",
        "type_code": TYPE,
        "route": "grant",
        "mode": "compare",
        "purpose": "核对营业执照",
        "matter": "M1",
        "fields": ["name"],
        "result": "match",
    }
    values.update(changes)
    return accesslog.append(session, **values)


# -- grants -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [[None, None], ["read"], 5, {"read": 1}, True])
def test_a_mode_that_is_not_text_is_a_422_not_a_500(mode):
    """Found by Schemathesis (tests/test_openapi.py): ``"mode": [null, null]`` in a QR lookup's body was a 500."""
    from core.problems import Problem
    from licenses import grants, sharing

    with pytest.raises(Problem) as refused:
        sharing.use_of("核验", "JT-0001", mode)
    assert refused.value.status == 422 and refused.value.extensions["code"] == "bad_mode"
    with pytest.raises(Problem):
        grants.check_mode(mode)


def test_modes_nest_and_matters_limit(sessions):
    from licenses import grants

    with db.transaction(sessions) as session:
        read, created = grants.add(session, client_id="hall", type_code=TYPE, mode="read", matters=["M1", "M2"], actor="test")
        assert created
        again, created = grants.add(session, client_id="hall", type_code=TYPE, mode="read", matters=["M2", "M1"], actor="test")
        assert not created and again.id == read.id
    with sessions() as session:
        assert grants.allowed(session, "hall", TYPE, "compare", "M1").id == read.id  # read includes compare
        assert grants.allowed(session, "hall", TYPE, "read", "M2").id == read.id
        assert grants.allowed(session, "hall", TYPE, "copy", "M1") is None  # copy needs more than read
        assert grants.allowed(session, "hall", TYPE, "read", "M3") is None  # another matter
        assert grants.allowed(session, "hall", OTHER_TYPE, "compare", "M1") is None  # another type
        assert grants.allowed(session, "other", TYPE, "compare", "M1") is None  # another client
        assert grants.allowed(session, "hall", TYPE, "issue", "*") is None  # issue is apart from reading
    with db.transaction(sessions) as session:
        anything, _ = grants.add(session, client_id="hall", type_code=OTHER_TYPE, mode="copy", matters=["*"], actor="test")
    with sessions() as session:
        assert grants.allowed(session, "hall", OTHER_TYPE, "read", "any matter at all").id == anything.id
    with db.transaction(sessions) as session:
        grants.revoke(session, read.id, actor="test")
    with sessions() as session:
        assert grants.allowed(session, "hall", TYPE, "compare", "M1") is None
        listed = [grants.as_json(g) for g in grants.active(session)]
        assert [g["id"] for g in listed] == [anything.id]
        assert len(grants.active(session, include_revoked=True)) == 2
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)).all()
    assert actions.count("licences.grant.added") == 2 and actions.count("licences.grant.revoked") == 1


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"type_code": "11100000000013952E999"}, "unknown_type"),
        ({"mode": "write"}, "bad_mode"),
        ({"matters": ["x" * 101]}, "bad_matter"),
        ({"mode": "issue", "matters": ["M1"]}, "bad_matter"),
        ({"client_id": ""}, "bad_client"),
    ],
)
def test_bad_grants_are_refused_and_nothing_is_written(sessions, changes, code):
    from core.problems import Problem
    from licenses import grants

    values = {"client_id": "hall", "type_code": TYPE, "mode": "compare", "matters": ["M1"], **changes}
    with pytest.raises(Problem) as refused, db.transaction(sessions) as session:
        grants.add(session, actor="test", **values)
    assert refused.value.extensions["code"] == code
    with sessions() as session:
        assert grants.active(session, include_revoked=True) == []


# -- the access log ---------------------------------------------------------------------------


def test_access_log_chains_and_names_the_altered_entry(sessions, migrated):
    from licenses import accesslog

    engine, _ = migrated
    with db.transaction(sessions) as session:
        for n in range(5):
            _append(session, matter=f"M{n}")
        _append(session, holder_hash=hashlib.sha256(b"someone else").hexdigest())
    with sessions() as session:
        assert accesslog.verify(session, batch=2).ok
        mine = accesslog.for_holder(session, [HOLDER])
        assert [e.matter for e in mine] == ["M4", "M3", "M2", "M1", "M0"]  # newest first, only this holder's
        assert accesslog.for_holder(session, [HOLDER], limit=2)[0].seq == 5
        assert accesslog.for_holder(session, ["not a hash"]) == []
    with engine.begin() as conn:
        conn.execute(text("UPDATE licenses_access_log SET purpose = '别的用途' WHERE seq = 3"))
    with sessions() as session:
        result = accesslog.verify(session)
    assert not result.ok and result.broken_at == 3 and "altered" in result.reason


def test_access_log_takes_no_holder_code_and_masks_resident_ids_in_free_text(sessions):
    from licenses import accesslog

    with pytest.raises(ValueError, match="lookup hash"), db.transaction(sessions) as session:
        _append(session, holder_hash="11010519491231002X")
    with db.transaction(sessions) as session:
        entry = _append(session, purpose="为 11010519491231002X 办理")
    assert "11010519491231002X" not in entry.purpose and "110105" not in entry.purpose[3:10]
    with sessions() as session:
        assert accesslog.verify(session).ok and accesslog.verify(session).checked == 1


def test_concurrent_appends_keep_one_chain(sessions):
    from licenses import accesslog

    errors = []

    def worker(n):
        try:
            for i in range(10):
                with db.transaction(sessions) as session:
                    _append(session, matter=f"W{n}-{i}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:2]
    with sessions() as session:
        result = accesslog.verify(session)
    assert result.ok and result.checked == 30


# -- receipts ---------------------------------------------------------------------------------


def _b64d(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def independently_verified(token: str, jwks: dict) -> tuple[dict, dict]:
    """(header, claims) of an ES256 compact JWS, checked with cryptography alone against a JWK Set."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(_b64d(header_b64))
    assert header["alg"] == "ES256"
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(_b64d(jwk["x"]), "big"), int.from_bytes(_b64d(jwk["y"]), "big"), ec.SECP256R1()
    ).public_key()
    raw = _b64d(signature_b64)
    assert len(raw) == 64
    der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, f"{header_b64}.{payload_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    return header, json.loads(_b64d(payload_b64))


def test_receipt_states_the_entry_and_checks_against_the_log(sessions, migrated, ctx):
    from licenses import receipts, signer

    engine, _ = migrated
    with db.transaction(sessions) as session:
        entry = _append(session, identifier="1.2.156.3005.2.X", fields=["name", "address"])
    token = receipts.issue(ctx, entry)
    header, claims = independently_verified(token, signer.jwks(ctx))
    assert header["typ"] == receipts.TYP
    assert claims["seq"] == entry.seq and claims["hash"] == entry.hash and claims["client"] == "market-approval"
    assert claims["purpose"] == "核对营业执照" and claims["matter"] == "M1" and claims["fields"] == ["address", "name"]
    assert claims["result"] == "match" and claims["at"] == entry.at and "holder" not in json.dumps(claims)
    with sessions() as session:
        assert receipts.check(ctx, session, token)["valid"]
        forged = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
        assert receipts.check(ctx, session, forged)["code"] == "forged_token"
    with pytest.raises(InvalidSignature):
        header_b64, payload_b64, signature_b64 = token.split(".")
        changed = base64.urlsafe_b64encode(json.dumps({**claims, "result": "no_match"}).encode()).rstrip(b"=").decode()
        independently_verified(f"{header_b64}.{changed}.{signature_b64}", signer.jwks(ctx))
    with engine.begin() as conn:
        conn.execute(text("UPDATE licenses_access_log SET result = 'no_match' WHERE seq = :seq"), {"seq": entry.seq})
    with sessions() as session:
        checked = receipts.check(ctx, session, token)
    assert not checked["valid"] and checked["code"] == "entry_changed"


# -- the consent detail -----------------------------------------------------------------------


def test_consent_detail_is_normalised_and_capped():
    from licenses import consent
    from licenses.settings import LicencesSettings

    settings = LicencesSettings(consent_max_days=2)
    checked = consent.check(
        {"type": consent.TYPE, "datatypes": [TYPE.lower()], "actions": ["read", "compare"], "matter": " M1 ", "purpose": "核对  经营范围"},
        now=1_000_000,
        settings=settings,
    )
    assert checked == {
        "type": consent.TYPE,
        "datatypes": [TYPE],
        "actions": ["compare", "read"],
        "matter": "M1",
        "purpose": "核对 经营范围",
        "duration": 86400,
        "expires_at": 1_000_000 + 86400,
    }
    longest = consent.check({"datatypes": [TYPE], "matter": "M1", "purpose": "p", "duration": 10**9}, now=0, settings=settings)
    assert longest["expires_at"] == 2 * 86400
    shorter = consent.check({"datatypes": [TYPE], "matter": "M1", "purpose": "p", "expires_at": 60}, now=0, settings=settings)
    assert shorter["expires_at"] == 60


@pytest.mark.parametrize(
    ("detail", "says"),
    [
        ({"matter": "M1", "purpose": "p"}, "datatypes"),
        ({"datatypes": ["nonsense"], "matter": "M1", "purpose": "p"}, "datatypes"),
        ({"datatypes": [TYPE], "purpose": "p"}, "matter"),
        ({"datatypes": [TYPE], "matter": "M1", "purpose": "p" * 201}, "purpose"),
        ({"datatypes": [TYPE], "matter": "M1", "purpose": "p", "actions": ["delete"]}, "actions"),
        ({"datatypes": [TYPE], "matter": "M1", "purpose": "p", "duration": -5}, "duration"),
        ({"datatypes": [TYPE], "matter": "M1", "purpose": "p", "identifier": "1.2.156.3005.2.X"}, "identifier"),
        ({"datatypes": [TYPE], "matter": "M1", "purpose": "p", "fields": ["x"]}, "unknown member"),
    ],
)
def test_bad_consent_details_say_why(detail, says):
    from licenses import consent

    with pytest.raises(InvalidDetail, match=says):
        consent.check({"type": consent.TYPE, **detail})
