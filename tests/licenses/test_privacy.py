"""Privacy at rest: sealed face fields and holder codes on a real database, data keys wrapped by the real SoftHSM2 token."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from core import db
from core.db import utc_now
from core.identifiers import generate_credit_code, generate_resident_id, mask_resident_id, organisation_code_check_char
from hsm import PKCS11URI
from tests.conftest import TOKEN_LABEL

PUBLIC_URL = "https://zw.example.gov.cn"
DRIVING = "1110000000001375XN001"  # the demo driving licence: licence number, address and birth date are sensitive
BUSINESS = "11100000000013952E001"  # the demo business licence: nothing sensitive
ISSUER = generate_credit_code("11350100" + "MB012345" + organisation_code_check_char("MB012345"))
HOLDER = generate_resident_id("350102", date(1988, 3, 14), 417)
ADDRESS = "福建省福州市鼓楼区五四路158号"


class CountingKeys:
    """The session's real key manager, counting what the licence library asks of it."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name not in ("secret_key", "encrypt", "decrypt"):
            return attr

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


@pytest.fixture
def sessions(migrated):
    from licenses import catalogue
    from licenses.models import Issuer

    _, factory = migrated
    with db.transaction(factory) as session:
        for name in ("driving-licence.json", "business-licence.json"):
            catalogue.add(session, catalogue.read_file(catalogue.DEMO_TYPES / name), actor="test")
        session.add(
            Issuer(credit_code=ISSUER, name="福州市公安局交通警察支队", seal_name="fz-traffic", created_at=utc_now(), created_by="test")
        )
    return factory


def new_context(key_manager, sessions):
    """What a process builds at start: a real (cheap) signing context and an empty cache."""
    from ca.context import CAContext
    from licenses.context import LicencesContext
    from signing.context import SigningContext

    ca = CAContext(sessions=sessions, keys=key_manager, public_url=PUBLIC_URL, lookup_key=b"test-lookup-key-0123456789")
    return LicencesContext(
        signing=SigningContext(ca=ca, public_url=PUBLIC_URL), keys=CountingKeys(key_manager), public_url=PUBLIC_URL, lookup_key=b"k" * 16
    )


@pytest.fixture
def ctx(key_manager, sessions):
    return new_context(key_manager, sessions)


def driving_face(n: int = 1) -> dict:
    return {
        "licence_number": generate_resident_id("350102", date(1988, 3, 14), 400 + n),
        "name": "林晓明",
        "sex": "男",
        "nationality": "中国",
        "address": ADDRESS,
        "birth_date": "1988-03-14",
        "first_issued_on": "2008-06-01",
        "vehicle_class": "C1",
    }


def identifier(n: int, type_code: str = DRIVING) -> str:
    from licenses import identifiers

    return str(identifiers.make(type_code, ISSUER, f"{n:08d}", 1))


def store(ctx, session, definition, face: dict, ident: str, holder: str = HOLDER):
    """A licence row with its face and holder sealed the way issuing seals them."""
    from licenses import privacy
    from licenses.models import Licence

    face_public, face_secret, data_key_id = privacy.seal_face(ctx, session, definition, face, ident)
    _, holder_cipher = privacy.seal_holder(ctx, session, holder, ident)
    now = utc_now()
    licence = Licence(
        identifier=ident,
        type_code=definition.code,
        issuer_code=ISSUER,
        serial=ident.split(".")[-3],
        version=1,
        holder_type=definition.holder_code_type,
        holder_hash="0" * 64,
        holder_masked=mask_resident_id(holder),
        holder_cipher=holder_cipher,
        holder_name=face[definition.holder_name_field],
        state="valid",
        state_changed_at=now,
        valid_from=date(2026, 1, 1),
        valid_until=None,
        issued_at=now,
        issued_by="test",
        face_public=face_public,
        face_secret=face_secret,
        data_key_id=data_key_id,
        requester="test",
    )
    session.add(licence)
    session.flush()
    return licence


def definition_of(sessions, code: str = DRIVING):
    from licenses import catalogue

    with sessions() as session:
        return catalogue.get(session, code)


def test_face_and_holder_round_trip(ctx, sessions):
    from licenses import privacy
    from licenses.models import Licence

    definition = definition_of(sessions)
    face = driving_face()
    with db.transaction(sessions) as session:
        store(ctx, session, definition, face, identifier(1))
    with sessions() as session:
        licence = session.get(Licence, identifier(1))
        assert json.loads(licence.face_public) == {k: v for k, v in face.items() if k not in definition.sensitive}
        assert licence.face_secret is not None and licence.data_key_id is not None
        opened = privacy.open_face(ctx, session, licence, definition)
        assert opened == face and list(opened) == [f.name for f in definition.fields]
        assert privacy.open_holder(ctx, session, licence) == HOLDER
        # A process that starts afresh (empty cache) reads the same.
        fresh = new_context(ctx.keys.inner, sessions)
        assert privacy.open_face(fresh, session, licence, definition) == face
        assert privacy.open_holder(fresh, session, licence) == HOLDER


def test_type_without_sensitive_fields_needs_no_key(ctx, sessions):
    from licenses import privacy

    definition = definition_of(sessions, BUSINESS)
    face = {"credit_code": ISSUER, "name": "福州某某食品有限公司", "entity_type": "有限责任公司"}
    with sessions() as session:
        public, secret, key_id = privacy.seal_face(ctx, session, definition, face, identifier(2, BUSINESS))
    assert (json.loads(public), secret, key_id) == (face, None, None)
    assert ctx.keys.calls == Counter()


def test_sensitive_values_are_not_in_the_stored_bytes(ctx, sessions, migrated):
    from licenses import privacy
    from licenses.models import DataKey, Licence

    definition = definition_of(sessions)
    face = driving_face()
    with db.transaction(sessions) as session:
        store(ctx, session, definition, face, identifier(3))
    secrets = [face["licence_number"], ADDRESS, face["birth_date"], HOLDER]
    with sessions() as session:
        licence = session.get(Licence, identifier(3))
        stored = licence.face_public.encode() + licence.face_secret + licence.holder_cipher
        data_key = session.get(DataKey, licence.data_key_id)
        raw_key = ctx.keys.inner.decrypt(data_key.wrapping_key_uri, data_key.wrapped, aad=privacy._WRAP_AAD)
    for value in secrets:
        assert value.encode() not in stored
        assert json.dumps(value).encode() not in stored  # nor as JSON (escaped) text
    assert b"licence_number" not in stored and b"address" not in stored
    assert len(raw_key) == 32 and raw_key not in data_key.wrapped
    engine, _ = migrated
    if engine.dialect.name == "sqlite":
        path = Path(engine.url.database)
        everything = b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())
        assert licence.face_secret in everything  # the file does hold the row ...
        for value in [*secrets, raw_key]:
            assert value.encode() not in everything if isinstance(value, str) else value not in everything  # ... never in clear


def test_values_bound_to_their_licence_and_column(ctx, sessions, caplog):
    from licenses import privacy
    from licenses.models import Licence

    definition = definition_of(sessions)
    with db.transaction(sessions) as session:
        first = store(ctx, session, definition, driving_face(1), identifier(4))
        second = store(
            ctx, session, definition, driving_face(2), identifier(5), holder=generate_resident_id("350102", date(1990, 1, 2), 12)
        )
        moved = Licence(
            identifier=second.identifier,
            face_public=second.face_public,
            face_secret=first.face_secret,
            data_key_id=first.data_key_id,
            holder_cipher=first.holder_cipher,
        )
        with pytest.raises(privacy.UnreadableData, match=f"sensitive fields of licence {second.identifier}") as caught:
            privacy.open_face(ctx, session, moved, definition)
        with pytest.raises(privacy.UnreadableData, match=f"holder of licence {second.identifier}"):
            privacy.open_holder(ctx, session, moved)
        # The holder's cipher is no face, nor the face's a holder, even in its own row.
        crossed = Licence(
            identifier=first.identifier,
            face_public="{}",
            face_secret=first.holder_cipher,
            data_key_id=first.data_key_id,
            holder_cipher=first.face_secret,
        )
        with pytest.raises(privacy.UnreadableData):
            privacy.open_face(ctx, session, crossed, definition)
        with pytest.raises(privacy.UnreadableData):
            privacy.open_holder(ctx, session, crossed)
    assert caught.value.status == 500 and caught.value.extensions["code"] == "unreadable_data"
    logged = [r.getMessage() for r in caplog.records if r.name == "licenses.privacy"]
    assert any(second.identifier in line and "do not open" in line for line in logged), logged
    for value in (driving_face(1)["licence_number"], ADDRESS, HOLDER):
        assert value not in str(caught.value) and not any(value in line for line in logged)


@pytest.mark.parametrize("where", [0, 1, 5, 17, -1], ids=["version", "key-id", "nonce", "ciphertext", "tag"])
def test_altered_value_does_not_open(ctx, sessions, where):
    from licenses import privacy

    with db.transaction(sessions) as session:
        key_id, blob = privacy.seal_value(ctx, session, b"1988-03-14", b"context")
        assert privacy.open_value(ctx, session, key_id, blob, b"context") == b"1988-03-14"
        altered = bytearray(blob)
        altered[where] ^= 0x01
        with pytest.raises(privacy.UnreadableData):
            privacy.open_value(ctx, session, key_id, bytes(altered), b"context")
        with pytest.raises(privacy.UnreadableData):
            privacy.open_value(ctx, session, key_id, blob, b"other context")
        with pytest.raises(privacy.UnreadableData, match="too short"):
            privacy.open_value(ctx, session, key_id, blob[:20], b"context")


def test_hsm_only_wraps_and_unwraps_data_keys(ctx, sessions):
    from licenses import privacy
    from licenses.models import DataKey, Licence

    definition = definition_of(sessions)
    with db.transaction(sessions) as session:
        for n in range(10, 30):
            store(ctx, session, definition, driving_face(n), identifier(n))
    # Forty values sealed (a face and a holder each): one data key made and wrapped, nothing unwrapped.
    assert ctx.keys.calls == Counter(secret_key=1, encrypt=1)
    with sessions() as session:
        keys = session.scalars(select(DataKey)).all()
        assert len(keys) == 1
        uri = PKCS11URI.parse(keys[0].wrapping_key_uri)
        assert (uri.token, uri.object, uri.type) == (TOKEN_LABEL, privacy.WRAPPING_KEY_LABEL, "secret-key")
        # Another process: one unwrap for all of them, then its cache answers.
        other = new_context(ctx.keys.inner, sessions)
        for n in range(10, 30):
            licence = session.get(Licence, identifier(n))
            assert privacy.open_face(other, session, licence, definition) == driving_face(n)
            assert privacy.open_holder(other, session, licence) == HOLDER
        assert other.keys.calls == Counter(decrypt=1)
    # And it seals with the data key it found rather than making another.
    with db.transaction(sessions) as session:
        store(other, session, definition, driving_face(40), identifier(40))
    assert other.keys.calls == Counter(decrypt=1)


def test_data_key_of_a_rolled_back_transaction_is_not_used(key_manager, sessions):
    """A data key made in a transaction that failed must not live on in the cache, even if its id comes back."""
    from licenses import privacy
    from licenses.models import Licence

    definition = definition_of(sessions)
    first = new_context(key_manager, sessions)
    with sessions() as session, session.begin():
        store(first, session, definition, driving_face(50), identifier(50))
        session.rollback()
    # Meanwhile another process makes the data key that lands (on SQLite, under the same id).
    second = new_context(key_manager, sessions)
    with db.transaction(sessions) as session:
        store(second, session, definition, driving_face(51), identifier(51))
    with db.transaction(sessions) as session:
        store(first, session, definition, driving_face(52), identifier(52))
        assert privacy.open_face(first, session, session.get(Licence, identifier(51)), definition) == driving_face(51)
    # A third process opens what both wrote.
    third = new_context(key_manager, sessions)
    with sessions() as session:
        for n in (51, 52):
            assert privacy.open_face(third, session, session.get(Licence, identifier(n)), definition) == driving_face(n)
        assert session.get(Licence, identifier(50)) is None


def test_mask_face(sessions):
    from licenses import privacy

    definition = definition_of(sessions)
    face = driving_face()
    masked = privacy.mask_face(definition, face)
    assert masked["licence_number"] == mask_resident_id(face["licence_number"]) != face["licence_number"]
    assert masked["address"] == "福***号"
    assert masked["birth_date"] == "****-**-**"
    assert {k: v for k, v in masked.items() if k not in definition.sensitive} == {
        k: v for k, v in face.items() if k not in definition.sensitive
    }
    short = privacy.mask_face(definition, {**face, "address": "某地址", "licence_number": "12"})
    assert short["address"] == "某***" and short["licence_number"] == "***"
