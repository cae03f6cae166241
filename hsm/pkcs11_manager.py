"""The key manager for any PKCS#11 module (SoftHSM2 by default, a network HSM in production).

Process model, learnt the hard way with SoftHSM2:

* Login state belongs to the process, not to a session. We log in once, keep that
  session open for the life of the manager, and open further sessions without a
  PIN. Closing the logged-in session would log every session out.
* Each thread borrows a session from a small pool, so signatures run in parallel
  (the module is initialised with OS locking, see :mod:`hsm.module`).
* A forked child re-initialises the module and builds a new pool on first use.
* When the token's sessions become invalid (token reinserted, HSM restarted,
  ``C_CloseAllSessions``), the operation is retried once on fresh sessions.
* When the token itself stops answering (its files gone, a network HSM unreachable: a
  general or device error, and the token's own information cannot be read either), or
  cannot be found or opened, or says a key this process has used is not there, or shows
  no object at all, the module is reinitialised (at most once a second per process,
  :func:`hsm.module.reinitialise`, which waits for the operations in flight on other
  threads) and the operation retried once; if that fails too,
  :class:`~hsm.errors.TokenUnavailable` is raised, which the web layer answers with 503.
  The next call tries again, so the service recovers by itself once the token is back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable

import pkcs11
from asn1crypto.core import OctetString
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.mechanisms import GCMParams
from pkcs11.util.ec import encode_named_curve_parameters

from hsm import module
from hsm.errors import (
    CiphertextInvalid,
    HSMError,
    KeyExists,
    KeyNotFound,
    PinIncorrect,
    PinLocked,
    TokenNotFound,
    TokenUnavailable,
    UnsupportedAlgorithm,
)
from hsm.keymanager import KeyAlgorithm, KeyInfo, KeyManager, TokenStatus
from hsm.signers import HSMECPrivateKey, HSMRSAPrivateKey
from hsm.uri import PKCS11URI

log = logging.getLogger("hallmark.hsm")

# Errors after which the sessions we hold are worth nothing; reopen and retry once.
_STALE_SESSION_ERRORS = (
    pkcs11.SessionHandleInvalid,
    pkcs11.SessionClosed,
    pkcs11.UserNotLoggedIn,
    pkcs11.DeviceRemoved,
    pkcs11.TokenNotPresent,
    pkcs11.ObjectHandleInvalid,
    pkcs11.KeyHandleInvalid,
)

# Errors that may mean the token stopped answering (or only that this operation failed: a GCM tag
# mismatch is CKR_GENERAL_ERROR on SoftHSM2); told apart by asking the token for its information.
_TROUBLE_ERRORS = (pkcs11.GeneralError, pkcs11.DeviceError, pkcs11.FunctionFailed, pkcs11.TokenNotRecognised)

_CURVES = {
    "ec-p256": ("secp256r1", ec.SECP256R1()),
    "ec-p384": ("secp384r1", ec.SECP384R1()),
}
_CURVE_BY_PARAMS = {encode_named_curve_parameters(name): (alg, curve) for alg, (name, curve) in _CURVES.items()}

PinProvider = Callable[[], str]

# What encrypt() returns: version byte, 12-byte GCM IV, ciphertext, 16-byte tag. The
# version byte is also authenticated (it leads the GCM AAD), so it cannot be swapped.
SECRET_BLOB_VERSION = 1
_GCM_IV_BYTES = 12
_GCM_TAG_BYTES = 16
# What a token answers when a GCM tag does not match: SoftHSM2 2.6 says CKR_GENERAL_ERROR,
# the PKCS#11 3.0 wording is CKR_ENCRYPTED_DATA_INVALID (or _LEN_RANGE for a short input).
_TAG_MISMATCH_ERRORS = (pkcs11.GeneralError, pkcs11.EncryptedDataInvalid, pkcs11.EncryptedDataLenRange)
# A secret key we make: AES-256 kept in the token, usable only to encrypt and decrypt.
_SECRET_KEY_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.ENCRYPT: True,
    Attribute.DECRYPT: True,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.DERIVE: False,
}


# Bumped in every forked child, so a pool can tell it was inherited without a
# getpid() system call on each signature; and when the module is reinitialised in this
# process (every session gone), so that every pool is rebuilt.
_forks = [0]
os.register_at_fork(after_in_child=lambda: _forks.__setitem__(0, _forks[0] + 1))


class _KnownKeyMissing(KeyNotFound):
    """A key is not found and the token is in trouble, not the key's name.

    Either this process has used the key, or the token shows no object at all: what SoftHSM2
    answers while its files are away, and after they are back until the module is started
    afresh. A worker that had not used a key before the token went away must not take that
    for "no such key" (a 500) for the rest of its life.
    """


class _Pool:
    """Sessions of one process: the logged-in one plus idle worker sessions."""

    def __init__(self, token, login_session):
        self.forks = _forks[0]
        self.token = token
        self.login_session = login_session
        self.idle: list = []
        # Key objects are bound to a session; cache them per (session, key id).
        self.keys: dict[tuple[int, bytes], pkcs11.PrivateKey] = {}
        self.secret_keys: dict[tuple[int, bytes], pkcs11.SecretKey] = {}


class PKCS11KeyManager(KeyManager):
    """Keys in one token of one PKCS#11 module."""

    def __init__(self, module_path: str, token_label: str, pin: PinProvider | str):
        self.module_path = module_path
        self.token_label = token_label
        self._pin = pin if callable(pin) else (lambda: pin)
        self._lock = threading.Lock()
        self._gate = module.gate(module_path)  # held around every use of the module; see hsm.module.Gate
        self._pool: _Pool | None = None
        self._generation = 0
        self._public_cache: dict[bytes, tuple[str, str, PublicKeyTypes]] = {}

    # -- pool ------------------------------------------------------------------------------

    def _open_pool(self) -> _Pool:
        lib = module.load(self.module_path)
        try:
            token = lib.get_token(token_label=self.token_label)
        except pkcs11.NoSuchToken:
            labels = [s.get_token().label for s in lib.get_slots(token_present=True)]
            raise TokenNotFound(self.token_label, labels) from None
        except pkcs11.MultipleTokensReturned:
            raise HSMError(f"several tokens are labelled {self.token_label!r}; labels must be unique") from None
        pin = self._pin()
        try:
            login_session = token.open(rw=True, user_pin=pin)
        except pkcs11.PinIncorrect:
            raise PinIncorrect(self.token_label) from None
        except pkcs11.PinLocked:
            raise PinLocked(self.token_label) from None
        except pkcs11.UserAlreadyLoggedIn:
            # Another manager in this process logged in already; login state is per process.
            login_session = token.open(rw=True)
        except pkcs11.PKCS11Error as exc:
            raise TokenUnavailable(self.token_label, f"cannot open it: {type(exc).__name__} {exc}".strip()) from None
        return _Pool(token, login_session)

    def _current_pool(self) -> _Pool:
        pool = self._pool
        if pool is not None and pool.forks == _forks[0]:
            return pool
        with self._lock:
            pool = self._pool
            if pool is None or pool.forks != _forks[0]:
                # In a forked child the parent's sessions are meaningless: drop, never close them.
                self._pool = pool = self._open_pool()
                self._generation += 1
            return pool

    def _discard_pool(self, stale: _Pool) -> None:
        with self._lock:
            if self._pool is stale:
                self._pool = None
                with contextlib.suppress(pkcs11.PKCS11Error):
                    stale.login_session.close()

    def _run(self, operation: Callable[[_Pool, object], object]):
        """Run ``operation(pool, session)`` on a pooled session; on a stale session start afresh once.

        A token that does not answer, or cannot be found or opened, gets one module
        reinitialisation and one more try; then :class:`TokenUnavailable`.

        Inlined rather than a ``contextmanager``: this runs once per signature, and the
        generator machinery cost ~1 us, about 3% of an EC P-256 signature on SoftHSM2.
        """
        for attempt in (1, 2):
            restart: TokenUnavailable | None = None  # set when the module should be started afresh before a retry
            key_missing = False
            self._gate.enter()
            try:
                try:
                    pool = self._current_pool()
                    try:
                        session = pool.idle.pop()
                    except IndexError:
                        session = pool.token.open(rw=True)
                except (PinIncorrect, PinLocked):
                    raise
                except TokenUnavailable as exc:  # not found, will not open
                    restart = exc
                except pkcs11.PKCS11Error as exc:  # no session to be had
                    restart = TokenUnavailable(self.token_label, type(exc).__name__)
                else:
                    stale = False
                    try:
                        return operation(pool, session)
                    except _STALE_SESSION_ERRORS:
                        stale = True  # never hand out a dead session again
                        if attempt == 2:
                            raise TokenUnavailable(self.token_label, "its sessions keep becoming invalid") from None
                        self._discard_pool(pool)
                    except _TROUBLE_ERRORS as exc:
                        if self._answers(pool):
                            raise  # the operation's own failure; the token is well
                        stale = True
                        restart = TokenUnavailable(self.token_label, type(exc).__name__)
                    except _KnownKeyMissing:
                        # A token whose files went away (and came back) answers "no such object": believed only from a
                        # module started afresh (by this call, or another thread's).
                        stale = True
                        key_missing = True
                        restart = TokenUnavailable(self.token_label, "a key it holds, or every key, is not found")
                    finally:
                        if not stale:
                            pool.idle.append(session)
            finally:
                self._gate.leave()
            # Outside the gate: reinitialising waits until no thread is inside it.
            if restart is not None:
                if attempt == 2:
                    raise restart from None
                if not self._reinitialise() and not key_missing:
                    raise restart from None
        raise AssertionError("unreachable")

    @staticmethod
    def _shows_nothing(session) -> bool:
        """Whether the token shows no object at all (asked only after a lookup found nothing; a token in service holds keys)."""
        objects = session.get_objects()
        try:
            return next(objects, None) is None
        finally:
            objects.close()  # ends the search (C_FindObjectsFinal) now: the session may search again

    def _not_found(self, session, uri: str, kind: str = "private key", *, used: bool = False) -> KeyNotFound:
        """What a lookup that found nothing raises: the token's trouble when the key was ``used`` in this process or
        the token shows nothing, else KeyNotFound (a wrong name)."""
        trouble = used or self._shows_nothing(session)
        return (_KnownKeyMissing if trouble else KeyNotFound)(uri, kind)

    @staticmethod
    def _answers(pool: _Pool) -> bool:
        """Whether the token still answers a question about itself (C_GetTokenInfo)."""
        try:
            pool.token.slot.get_token()
            return True
        except pkcs11.PKCS11Error:
            return False

    def _reinitialise(self) -> bool:
        """Start the module afresh in this process; False if that was done a moment ago (by any thread)."""
        # The sessions die with the module's state: every pool of this process is rebuilt, none closed. Bumped while
        # no operation can start, so none picks up a handle of the old module.
        done = module.reinitialise(self.module_path, then=lambda: _forks.__setitem__(0, _forks[0] + 1))
        if done:
            log.warning("the PKCS#11 module %s was started afresh: token %r did not answer", self.module_path, self.token_label)
        return done

    # -- keys ------------------------------------------------------------------------------

    def _private_key(self, pool: _Pool, session, key_id: bytes) -> pkcs11.PrivateKey:
        cache_key = (id(session), key_id)
        key = pool.keys.get(cache_key)
        if key is None:
            try:
                key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
            except pkcs11.NoSuchKey:
                raise self._not_found(session, self._uri_text(key_id), used=key_id in self._public_cache) from None
            pool.keys[cache_key] = key
        return key

    def _resolve_id(self, uri: str) -> bytes:
        """The CKA_ID of the private key named by ``uri`` (which may name it by label only)."""
        parsed = PKCS11URI.parse(uri)
        if parsed.token is not None and parsed.token != self.token_label:
            raise KeyNotFound(parsed.without_secrets())
        if parsed.type not in (None, "private", "public"):
            raise KeyNotFound(parsed.without_secrets())
        if parsed.id is not None:
            return parsed.id
        if parsed.object is None:
            raise KeyNotFound(parsed.without_secrets() + " (it names neither object nor id)")

        def find(pool, session):
            found = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: parsed.object}))
            if not found:
                raise self._not_found(session, parsed.without_secrets())
            if len(found) > 1:
                raise HSMError(f"{len(found)} private keys are labelled {parsed.object!r}; name the key by id")
            return found[0][Attribute.ID]

        return self._run(find)

    def _uri_text(self, key_id: bytes, label: str | None = None) -> str:
        path = {"token": self.token_label}
        if label:
            path["object"] = label
        return str(PKCS11URI(path=path, id=key_id))

    def _describe(self, key_id: bytes) -> tuple[str, str, PublicKeyTypes]:
        """(label, algorithm, public key) for a key id; immutable, so cached."""
        cached = self._public_cache.get(key_id)
        if cached is not None:
            return cached

        def read(pool, session):
            try:
                public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=key_id)
            except pkcs11.NoSuchKey:
                self._private_key(pool, session, key_id)  # raises KeyNotFound if there is none
                raise HSMError(f"the key {self._uri_text(key_id)} has no public-key object in the token") from None
            return public.label, _public_key_of(public)

        label, (algorithm, public_key) = self._run(read)
        described = (label, algorithm, public_key)
        self._public_cache[key_id] = described
        return described

    def create_key(self, label: str, algorithm: KeyAlgorithm) -> KeyInfo:
        if not label or len(label) > 64:
            raise HSMError("a key label must be 1 to 64 characters")
        key_id = secrets.token_bytes(16)
        private_template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.DECRYPT: False,
            Attribute.UNWRAP: False,
            Attribute.DERIVE: False,
        }
        public_template = {Attribute.TOKEN: True, Attribute.VERIFY: True, Attribute.ENCRYPT: False, Attribute.WRAP: False}

        def generate(pool, session):
            existing = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label}))
            if existing:
                raise KeyExists(label)
            if algorithm.is_rsa:
                public, _ = session.generate_keypair(
                    KeyType.RSA,
                    algorithm.bits,
                    id=key_id,
                    label=label,
                    store=True,
                    public_template={**public_template, Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01"},
                    private_template=private_template,
                )
            else:
                curve_name = _CURVES[algorithm.value][0]
                params = session.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(curve_name)}, local=True
                )
                public, _ = params.generate_keypair(
                    id=key_id,
                    label=label,
                    store=True,
                    public_template=public_template,
                    private_template=private_template,
                )
            return _public_key_of(public)

        try:
            alg, public_key = self._run(generate)
        except pkcs11.TokenWriteProtected:
            raise HSMError(f"token {self.token_label!r} is write-protected") from None
        except pkcs11.DeviceMemory:
            raise HSMError(f"token {self.token_label!r} has no room for another key") from None
        self._public_cache[key_id] = (label, alg, public_key)
        return KeyInfo(self._uri_text(key_id, label), label, alg, public_key)

    def public_key(self, uri: str) -> PublicKeyTypes:
        return self._describe(self._resolve_id(uri))[2]

    def signer(self, uri: str):
        key_id = self._resolve_id(uri)
        label, _algorithm, public_key = self._describe(key_id)
        # Fail now, not at the first signature, when only a public key exists.
        self._run(lambda pool, session: self._private_key(pool, session, key_id))
        uri_text = self._uri_text(key_id, label)
        if isinstance(public_key, rsa.RSAPublicKey):
            return HSMRSAPrivateKey(self, key_id, uri_text, public_key)
        return HSMECPrivateKey(self, key_id, uri_text, public_key)

    def sign_with(self, key_id: bytes, data: bytes, mechanism, mechanism_param=None) -> bytes:
        """Sign ``data`` with the private key ``key_id`` by a raw PKCS#11 mechanism.

        Used by the signer objects; callers outside this package use ``signer()``.
        This is the hot path (one call per signature), so the common case is
        written out here rather than going through ``_run`` and a closure; any
        trouble falls back to ``_run``, which retries on fresh sessions.
        """
        gate = self._gate
        gate.enter()
        try:
            pool = self._pool
            if pool is not None and pool.forks == _forks[0]:
                try:
                    session = pool.idle.pop()
                except IndexError:
                    session = None
                if session is not None:
                    key = pool.keys.get((id(session), key_id))
                    if key is not None:
                        try:
                            signature = key.sign(data, mechanism=mechanism, mechanism_param=mechanism_param)
                        except (*_STALE_SESSION_ERRORS, *_TROUBLE_ERRORS):
                            # Dropped, not returned; _run below tells a failed signature from a token in trouble.
                            self._discard_pool(pool)
                        except BaseException:
                            pool.idle.append(session)
                            raise
                        else:
                            pool.idle.append(session)
                            return signature
                    else:
                        pool.idle.append(session)
        finally:
            gate.leave()

        def sign(pool, session):
            key = self._private_key(pool, session, key_id)
            return key.sign(data, mechanism=mechanism, mechanism_param=mechanism_param)

        return self._run(sign)

    # -- secret keys -------------------------------------------------------------------------

    def secret_key(self, label: str) -> str:
        """The AES-256 key labelled ``label``; made when absent.

        Labels are not unique in PKCS#11, so two processes that both find nothing may
        both make one. Every process therefore searches again after making its key and
        takes the one with the lowest CKA_ID: after a race all processes agree from the
        next call on. Neither key is deleted, since the loser may already have
        encrypted something, and its URI (which names the id) still decrypts it.
        Keys with that label but weaker attributes (extractable, not sensitive) are
        never picked.
        """
        if not label or len(label) > 64:
            raise HSMError("a key label must be 1 to 64 characters")

        def find_or_create(pool, session):
            found = self._secret_ids(session, label)
            if not found:
                session.generate_key(KeyType.AES, 256, id=secrets.token_bytes(16), label=label, store=True, template=_SECRET_KEY_TEMPLATE)
                found = self._secret_ids(session, label)
            return found[0]

        try:
            key_id = self._run(find_or_create)
        except pkcs11.TokenWriteProtected:
            raise HSMError(f"token {self.token_label!r} is write-protected") from None
        except pkcs11.DeviceMemory:
            raise HSMError(f"token {self.token_label!r} has no room for another key") from None
        except pkcs11.MechanismInvalid:
            raise UnsupportedAlgorithm(f"token {self.token_label!r} cannot generate AES keys") from None
        return self._secret_uri(key_id, label)

    @staticmethod
    def _secret_ids(session, label: str) -> list[bytes]:
        """CKA_IDs of the usable AES-256 keys labelled ``label``, lowest first."""
        template = {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.AES,
            Attribute.LABEL: label,
            Attribute.VALUE_LEN: 32,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.ENCRYPT: True,
            Attribute.DECRYPT: True,
        }
        return sorted(obj[Attribute.ID] for obj in session.get_objects(template))

    def _secret_uri(self, key_id: bytes, label: str | None = None) -> str:
        path = {"token": self.token_label, **({"object": label} if label else {}), "type": "secret-key"}
        return str(PKCS11URI(path=path, id=key_id))

    def _resolve_secret_id(self, uri: str) -> bytes:
        """The CKA_ID of the secret key named by ``uri`` (by id, or by label: the lowest id, as secret_key picks)."""
        parsed = PKCS11URI.parse(uri)
        if parsed.token is not None and parsed.token != self.token_label:
            raise KeyNotFound(parsed.without_secrets(), "secret key")
        if parsed.type not in (None, "secret-key"):
            raise KeyNotFound(parsed.without_secrets(), "secret key")
        if parsed.id is not None:
            return parsed.id
        if parsed.object is None:
            raise KeyNotFound(parsed.without_secrets() + " (it names neither object nor id)", "secret key")

        def find(pool, session):
            found = self._secret_ids(session, parsed.object)
            if not found:
                raise self._not_found(session, parsed.without_secrets(), "secret key")
            return found[0]

        return self._run(find)

    def _secret_key_object(self, pool: _Pool, session, key_id: bytes) -> pkcs11.SecretKey:
        cache_key = (id(session), key_id)
        key = pool.secret_keys.get(cache_key)
        if key is None:
            try:
                key = session.get_key(object_class=ObjectClass.SECRET_KEY, id=key_id)
            except pkcs11.NoSuchKey:
                raise self._not_found(session, self._secret_uri(key_id), "secret key") from None
            pool.secret_keys[cache_key] = key
        return key

    def encrypt(self, uri: str, plaintext: bytes, aad: bytes = b"") -> bytes:
        """AES-GCM inside the token with a fresh random 96-bit IV.

        Random IVs are safe up to about 2**32 messages per key (NIST SP 800-38D 8.3);
        these keys wrap data keys, so they see a handful.
        """
        if not isinstance(plaintext, bytes | bytearray) or not isinstance(aad, bytes | bytearray):
            raise TypeError("plaintext and aad must be bytes")
        key_id = self._resolve_secret_id(uri)
        header = bytes([SECRET_BLOB_VERSION]) + secrets.token_bytes(_GCM_IV_BYTES)
        params = GCMParams(header[1:], header[:1] + bytes(aad), _GCM_TAG_BYTES * 8)

        def run(pool, session):
            return self._secret_key_object(pool, session, key_id).encrypt(
                bytes(plaintext), mechanism=Mechanism.AES_GCM, mechanism_param=params
            )

        try:
            return header + self._run(run)
        except pkcs11.MechanismInvalid:
            raise UnsupportedAlgorithm(f"token {self.token_label!r} does not offer AES-GCM (CKM_AES_GCM)") from None

    def decrypt(self, uri: str, blob: bytes, aad: bytes = b"") -> bytes:
        if not isinstance(blob, bytes | bytearray) or not isinstance(aad, bytes | bytearray):
            raise TypeError("blob and aad must be bytes")
        blob = bytes(blob)
        if len(blob) < 1 + _GCM_IV_BYTES + _GCM_TAG_BYTES:
            raise CiphertextInvalid(PKCS11URI.parse(uri).without_secrets(), "it is too short to be encrypted data")
        if blob[0] != SECRET_BLOB_VERSION:
            raise CiphertextInvalid(PKCS11URI.parse(uri).without_secrets(), f"unknown format version {blob[0]}")
        key_id = self._resolve_secret_id(uri)
        params = GCMParams(blob[1 : 1 + _GCM_IV_BYTES], blob[:1] + bytes(aad), _GCM_TAG_BYTES * 8)
        body = blob[1 + _GCM_IV_BYTES :]

        def run(pool, session):
            return self._secret_key_object(pool, session, key_id).decrypt(body, mechanism=Mechanism.AES_GCM, mechanism_param=params)

        try:
            return self._run(run)
        except _TAG_MISMATCH_ERRORS:
            raise CiphertextInvalid(self._secret_uri(key_id)) from None
        except pkcs11.MechanismInvalid:
            raise UnsupportedAlgorithm(f"token {self.token_label!r} does not offer AES-GCM (CKM_AES_GCM)") from None

    # -- listing and status ------------------------------------------------------------------

    def keys(self) -> list[KeyInfo]:
        def list_ids(pool, session):
            return [(obj[Attribute.ID], obj[Attribute.LABEL]) for obj in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})]

        found = []
        for key_id, label in self._run(list_ids):
            try:
                _, algorithm, public_key = self._describe(key_id)
            except HSMError:
                continue  # a private key without its public half is not ours to use
            found.append(KeyInfo(self._uri_text(key_id, label), label, algorithm, public_key))
        return sorted(found, key=lambda k: k.label)

    def status(self) -> TokenStatus:
        def round_trip(pool, session):
            pool.token.slot.get_token()  # cheap, and fails when the token's sessions went away
            return pool.token

        try:
            token = self._run(round_trip)
            return TokenStatus(
                True,
                self.module_path,
                self.token_label,
                manufacturer=token.manufacturer_id,
                model=token.model,
                serial=token.serial.decode() if isinstance(token.serial, bytes) else str(token.serial),
            )
        except HSMError as exc:
            return TokenStatus(False, self.module_path, self.token_label, str(exc))
        except pkcs11.PKCS11Error as exc:
            return TokenStatus(False, self.module_path, self.token_label, f"{type(exc).__name__} {exc}".strip())

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        with self._gate:
            if pool is None or pool.forks != _forks[0]:
                return
            for session in pool.idle:
                with contextlib.suppress(pkcs11.PKCS11Error):
                    session.close()
            with contextlib.suppress(pkcs11.PKCS11Error):
                pool.login_session.close()


def _public_key_of(public: pkcs11.PublicKey) -> tuple[str, PublicKeyTypes]:
    if public.key_type == KeyType.RSA:
        n = int.from_bytes(public[Attribute.MODULUS], "big")
        e = int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big")
        key = rsa.RSAPublicNumbers(e, n).public_key()
        return f"rsa-{key.key_size}", key
    if public.key_type == KeyType.EC:
        params = public[Attribute.EC_PARAMS]
        if params not in _CURVE_BY_PARAMS:
            raise UnsupportedAlgorithm("the key is on a curve other than P-256 or P-384")
        algorithm, curve = _CURVE_BY_PARAMS[params]
        point = OctetString.load(public[Attribute.EC_POINT]).native
        return algorithm, ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    raise UnsupportedAlgorithm(f"unsupported key type {public.key_type!r}")
