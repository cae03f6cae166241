"""AES secret keys in the real SoftHSM2 token: encrypt and decrypt (AES-GCM) inside it."""

from __future__ import annotations

import ctypes
import multiprocessing
import uuid

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from hsm import PKCS11URI, CiphertextInvalid, KeyAlgorithm, KeyNotFound
from hsm.softhsm import default_module
from tests.conftest import TOKEN_LABEL


def fresh_label() -> str:
    # The token lives for the whole session; each test makes keys of its own.
    return f"test-secret-{uuid.uuid4().hex[:12]}"


def key_object(key_manager, uri: str):
    key_id = PKCS11URI.parse(uri).id
    return key_manager._run(lambda pool, session: session.get_key(object_class=ObjectClass.SECRET_KEY, id=key_id))


def test_round_trip_and_blob_layout(key_manager):
    uri = key_manager.secret_key(fresh_label())
    for plaintext in (b"", b"\x00" * 32, "电子证照 data key".encode(), bytes(range(256)) * 40):
        blob = key_manager.encrypt(uri, plaintext, aad=b"row 7")
        assert blob[0] == 1 and len(blob) == 1 + 12 + len(plaintext) + 16
        assert key_manager.decrypt(uri, blob, aad=b"row 7") == plaintext
    # A fresh IV each time: the same input never gives the same blob.
    assert key_manager.encrypt(uri, b"same") != key_manager.encrypt(uri, b"same")
    assert key_manager.decrypt(uri, key_manager.encrypt(uri, b"no aad")) == b"no aad"


def test_same_label_same_uri_and_label_only_uri(key_manager):
    label = fresh_label()
    uri = key_manager.secret_key(label)
    assert uri == key_manager.secret_key(label)
    parsed = PKCS11URI.parse(uri)
    assert (parsed.token, parsed.object, parsed.type) == (TOKEN_LABEL, label, "secret-key") and len(parsed.id) == 16
    assert key_manager.secret_key(fresh_label()) != uri
    blob = key_manager.encrypt(uri, b"named by label")
    assert key_manager.decrypt(f"pkcs11:token={TOKEN_LABEL};object={label};type=secret-key", blob) == b"named by label"


def test_other_aad_fails(key_manager):
    uri = key_manager.secret_key(fresh_label())
    blob = key_manager.encrypt(uri, b"secret", aad=b"licence A")
    with pytest.raises(CiphertextInvalid, match="altered, or sealed under another key or with other associated data"):
        key_manager.decrypt(uri, blob, aad=b"licence B")
    with pytest.raises(CiphertextInvalid):
        key_manager.decrypt(uri, blob)


@pytest.mark.parametrize(
    "where, reason",
    [(0, "unknown format version"), (1, "altered"), (12, "altered"), (13, "altered"), (-1, "altered")],
    ids=["version", "iv-start", "iv-end", "ciphertext", "tag"],
)
def test_tampered_blob_fails(key_manager, where, reason):
    uri = key_manager.secret_key(fresh_label())
    blob = bytearray(key_manager.encrypt(uri, b"thirty-two bytes of a data key!!"))
    blob[where] ^= 0x01
    with pytest.raises(CiphertextInvalid, match=reason):
        key_manager.decrypt(uri, bytes(blob))
    # The session that failed goes back to the pool and still works.
    assert key_manager.decrypt(uri, key_manager.encrypt(uri, b"after")) == b"after"


def test_truncated_or_foreign_blob_fails(key_manager):
    uri = key_manager.secret_key(fresh_label())
    blob = key_manager.encrypt(uri, b"payload")
    with pytest.raises(CiphertextInvalid, match="too short"):
        key_manager.decrypt(uri, blob[:20])
    with pytest.raises(CiphertextInvalid):
        key_manager.decrypt(uri, blob[:-1])
    with pytest.raises(CiphertextInvalid):
        key_manager.decrypt(key_manager.secret_key(fresh_label()), blob)  # another key


def test_key_cannot_be_read_or_wrapped_out(key_manager):
    uri = key_manager.secret_key(fresh_label())
    key = key_object(key_manager, uri)
    with pytest.raises(pkcs11.AttributeSensitive):
        key[Attribute.VALUE]
    assert key.key_type == KeyType.AES and key[Attribute.VALUE_LEN] == 32
    assert key[Attribute.TOKEN] and key[Attribute.SENSITIVE] and key[Attribute.ALWAYS_SENSITIVE]
    assert not key[Attribute.EXTRACTABLE] and key[Attribute.NEVER_EXTRACTABLE]
    assert not key[Attribute.WRAP] and not key[Attribute.SIGN] and not key[Attribute.DERIVE]

    def wrap_out(pool, session):
        # Nor can it leave wrapped under a key the caller chose.
        wrapper = session.generate_key(KeyType.AES, 256, store=False, template={Attribute.WRAP: True, Attribute.UNWRAP: True})
        return wrapper.wrap_key(
            session.get_key(object_class=ObjectClass.SECRET_KEY, id=PKCS11URI.parse(uri).id), mechanism=Mechanism.AES_KEY_WRAP_PAD
        )

    with pytest.raises(pkcs11.KeyUnextractable):
        key_manager._run(wrap_out)


def test_weaker_key_with_the_same_label_is_never_picked(key_manager):
    label = fresh_label()

    def plant(pool, session):
        session.generate_key(
            KeyType.AES, 256, id=b"\x00", label=label, store=True, template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}
        )

    key_manager._run(plant)
    uri = key_manager.secret_key(label)
    assert PKCS11URI.parse(uri).id != b"\x00"  # the planted one has the lowest id, yet is ignored
    assert not key_object(key_manager, uri)[Attribute.EXTRACTABLE]


def test_uris_name_the_right_kind_of_key(key_manager):
    secret = key_manager.secret_key(fresh_label())
    with pytest.raises(KeyNotFound, match="no private key"):
        key_manager.signer(secret)
    signing = key_manager.create_key(fresh_label(), KeyAlgorithm.EC_P256).uri
    with pytest.raises(KeyNotFound, match="no secret key"):
        key_manager.encrypt(signing, b"x")
    with pytest.raises(KeyNotFound, match="no secret key"):
        key_manager.encrypt(f"pkcs11:token={TOKEN_LABEL};object=no-such-secret", b"x")
    with pytest.raises(KeyNotFound):
        key_manager.encrypt(secret.replace(f"token={TOKEN_LABEL}", "token=another"), b"x")


def test_recovers_when_token_sessions_become_invalid(key_manager):
    uri = key_manager.secret_key(fresh_label())
    blob = key_manager.encrypt(uri, b"before")
    slot = key_manager._current_pool().token.slot.slot_id
    assert ctypes.CDLL(default_module()).C_CloseAllSessions(ctypes.c_ulong(slot)) == 0
    assert key_manager.decrypt(uri, blob) == b"before"


def test_lowest_id_wins_when_a_race_made_two_keys(key_manager):
    """What two processes that both found nothing leave behind: two good keys under one label."""
    from hsm.pkcs11_manager import _SECRET_KEY_TEMPLATE

    label = fresh_label()
    first = key_manager.secret_key(label)
    blob = key_manager.encrypt(first, b"sealed before the other key appeared")

    def make(key_id):
        return lambda pool, session: session.generate_key(
            KeyType.AES, 256, id=key_id, label=label, store=True, template=_SECRET_KEY_TEMPLATE
        )

    key_manager._run(make(b"\x00" * 16))
    key_manager._run(make(b"\xff" * 16))
    chosen = key_manager.secret_key(label)
    assert PKCS11URI.parse(chosen).id == b"\x00" * 16
    assert key_manager.secret_key(label) == chosen
    # Label-only URIs pick the same key; a URI with an id keeps naming its own key.
    labelled = f"pkcs11:token={TOKEN_LABEL};object={label}"
    assert key_manager.decrypt(chosen, key_manager.encrypt(labelled, b"x")) == b"x"
    assert key_manager.decrypt(first, blob) == b"sealed before the other key appeared"


def _make_in_child(key_manager, label, conn):
    try:
        uri = key_manager.secret_key(label)
        conn.send(("ok", uri, key_manager.encrypt(uri, b"from the child", aad=b"child")))
    except BaseException as exc:
        conn.send(("error", repr(exc), b""))


def test_a_key_made_in_another_process_is_found(key_manager):
    key_manager.keys()  # the child inherits an initialised module, as a forked worker does
    label = fresh_label()
    parent_end, child_end = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(target=_make_in_child, args=(key_manager, label, child_end))
    child.start()
    assert parent_end.poll(60), "the child did not answer"
    status, uri, blob = parent_end.recv()
    child.join(30)
    assert status == "ok", uri
    assert key_manager.secret_key(label) == uri  # found, not made a second time
    assert key_manager.decrypt(uri, blob, aad=b"child") == b"from the child"
