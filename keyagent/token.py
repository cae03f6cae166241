"""The USB key: one token of a PKCS#11 module, as ``hallmark-key`` uses it, through python-pkcs11.

A desktop holds one USB key and does one thing with it at a time, so a :class:`UsbKey`
keeps one logged-in session (PKCS#11 login state belongs to the process: closing
that session logs every session out) and runs every operation under one lock; a USB
key serves one command at a time anyway. Private keys are made inside the token,
sensitive and never extractable, and never leave it.

A certificate belongs to a key when both carry the same ``CKA_ID``, the PKCS#11
convention every middleware (OpenSC, NSS, the vendors' CSPs) follows. CA
certificates of the chain are stored too, under their subject key identifier.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pkcs11
from asn1crypto.core import OctetString
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters
from pkcs11.util.x509 import decode_x509_certificate

PinSource = Callable[[], str]
MAX_LABEL = 64
# Key pairs hallmark-key makes: name -> (key type, curve name or RSA modulus bits).
KEY_ALGORITHMS = {"ec-p256": (KeyType.EC, "secp256r1"), "ec-p384": (KeyType.EC, "secp384r1"), "rsa-2048": (KeyType.RSA, 2048)}
_CURVES = {"secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1()}
_EC_ALGORITHMS = {curve: name for name, (key_type, curve) in KEY_ALGORITHMS.items() if key_type == KeyType.EC}  # curve -> name


class TokenError(Exception):
    """Something about the USB key is not as needed; the message says what, fit for a user."""


class UnsupportedKey(TokenError):
    """A key hallmark-key cannot sign with (neither EC on a known curve nor RSA)."""


@dataclass(frozen=True)
class TokenSummary:
    label: str
    manufacturer: str
    model: str
    serial: str


@dataclass(frozen=True)
class StoredCertificate:
    """A certificate object on the token."""

    label: str
    key_id: bytes
    certificate: x509.Certificate = field(repr=False)

    @property
    def id(self) -> str:
        return self.key_id.hex()

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @property
    def subject(self) -> str:
        return display_name(self.certificate.subject)

    @property
    def is_ca(self) -> bool:
        try:
            return self.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            return False

    def valid_at(self, when: datetime | None = None) -> bool:
        when = when or datetime.now(UTC)
        return self.certificate.not_valid_before_utc <= when <= self.certificate.not_valid_after_utc


@dataclass(frozen=True)
class StoredKey:
    """A key pair on the token (seen through its public half, or its private half after login)."""

    label: str
    key_id: bytes
    algorithm: str
    private: bool

    @property
    def id(self) -> str:
        return self.key_id.hex()


_NAME_OVERRIDES = {x509.NameOID.SERIAL_NUMBER: "serialNumber", x509.NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier"}


_IDENTIFIER = re.compile(r"(?<![0-9A-Z])(IDCCN-|NTRCN-)?([0-9A-Z]{15,18})(?![0-9A-Z])")


def display_name(name: x509.Name) -> str:
    """RFC 4514 text with readable attribute names, resident IDs and credit codes masked.

    This text goes to logs, the terminal and allowed hall pages; a full resident ID
    goes to none of them.
    """
    return _IDENTIFIER.sub(_masked, name.rfc4514_string(_NAME_OVERRIDES))


def _masked(found: re.Match) -> str:
    value = found.group(2)
    if not any(c.isdigit() for c in value[:6]):
        return found.group(0)  # not an identifier (e.g. a word in a name)
    return (found.group(1) or "") + value[:3] + "*" * (len(value) - 7) + value[-4:]


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


def use_softhsm2_conf(path: str | None) -> None:
    """Point SoftHSM2 at ``path`` (it reads ``SOFTHSM2_CONF`` once, when the module is loaded)."""
    if path:
        os.environ["SOFTHSM2_CONF"] = str(path)


def tokens(module_path: str) -> list[TokenSummary]:
    """Every token present in the module's slots."""
    lib = _load(module_path)
    found = []
    for slot in lib.get_slots(token_present=True):
        token = slot.get_token()
        if not token.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED:
            continue  # a blank token (SoftHSM2 always offers one in a free slot)
        found.append(TokenSummary(_text(token.label), _text(token.manufacturer_id), _text(token.model), _text(token.serial)))
    return found


def _load(module_path: str):
    if not module_path or not os.path.isfile(module_path):
        raise TokenError(f"the PKCS#11 module {module_path!r} does not exist; name the USB key's module with --module")
    try:
        return pkcs11.lib(module_path)  # loaded once per process, shared with pyHanko
    except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
        raise TokenError(f"the PKCS#11 module {module_path!r} failed: {type(exc).__name__} {exc}".strip()) from None


class UsbKey:
    """One token. ``pin`` is asked for only when something needs the user to be logged in."""

    def __init__(self, module_path: str, token_label: str | None = None, pin: PinSource | str | None = None):
        self.module_path = module_path
        present = tokens(module_path)
        labels = [t.label for t in present]
        if token_label is None:
            if not present:
                raise TokenError("no USB key found: the PKCS#11 module shows no token (is the key plugged in?)")
            if len(present) > 1:
                raise TokenError(f"several tokens are present ({', '.join(repr(x) for x in labels)}); choose one with --token")
            token_label = present[0].label
        elif token_label not in labels:
            raise TokenError(f"no token labelled {token_label!r} (present: {', '.join(repr(x) for x in labels) or 'none'})")
        self.label = token_label
        self.summary = next(t for t in present if t.label == token_label)
        self._pin = pin
        self._lock = threading.RLock()
        self._login_session = None
        self._token = _load(module_path).get_token(token_label=token_label)

    # -- sessions --------------------------------------------------------------------------

    def login(self) -> None:
        """Log in now, asking for the PIN (a wrong PIN fails here, not at the first signature)."""
        with self._lock:
            if self._login_session is not None:
                return
            if self._pin is None:
                raise TokenError("this needs the USB key's PIN")
            pin = self._pin() if callable(self._pin) else self._pin
            try:
                self._login_session = self._token.open(rw=True, user_pin=pin)
            except pkcs11.UserAlreadyLoggedIn:
                self._login_session = self._token.open(rw=True)  # this process logged in already
            except pkcs11.PinIncorrect:
                raise TokenError(f"the USB key {self.label!r} refused the PIN (wrong PIN)") from None
            except pkcs11.PinLocked:
                raise TokenError(f"the PIN of the USB key {self.label!r} is locked; it must be unblocked first") from None
            except pkcs11.PKCS11Error as exc:
                raise TokenError(f"cannot log in to the USB key {self.label!r}: {type(exc).__name__} {exc}".strip()) from None

    def _session(self, *, rw: bool = False, logged_in: bool = False):
        # After the login every new session of this process is logged in too; we never log
        # in (or out) from these short sessions ourselves.
        if logged_in:
            self.login()
        try:
            return self._token.open(rw=rw)
        except pkcs11.PKCS11Error as exc:
            raise TokenError(f"cannot open the USB key {self.label!r}: {type(exc).__name__} {exc}".strip()) from None

    def close(self) -> None:
        with self._lock:
            if self._login_session is not None:
                try:
                    self._login_session.close()  # logs this process out of the token
                except pkcs11.PKCS11Error:
                    pass  # the key was pulled out: nothing left to close
                self._login_session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- reading ---------------------------------------------------------------------------

    def certificates(self) -> list[StoredCertificate]:
        """Every X.509 certificate object on the token (no PIN needed)."""
        found = []
        with self._lock, self._session() as session:
            for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}):
                try:
                    certificate = x509.load_der_x509_certificate(obj[Attribute.VALUE])
                except ValueError:
                    continue  # not X.509, or damaged: not ours to use
                found.append(StoredCertificate(_text(obj[Attribute.LABEL]), bytes(obj[Attribute.ID]), certificate))
        return found

    def public_keys(self) -> list[StoredKey]:
        found = []
        with self._lock, self._session() as session:
            for obj in session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY}):
                found.append(StoredKey(_text(obj.label), bytes(obj[Attribute.ID]), _algorithm(obj), private=False))
        return found

    def private_keys(self) -> list[StoredKey]:
        """Private keys (needs the PIN): they are private objects, invisible before login."""
        self.login()
        with self._lock:
            objects = self._login_session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            return [StoredKey(_text(obj.label), bytes(obj[Attribute.ID]), _algorithm(obj), private=True) for obj in objects]

    def identities(self) -> list[StoredCertificate]:
        """End-entity certificates whose private key is on the token: what can sign (needs the PIN)."""
        with_key = {k.key_id for k in self.private_keys()}
        return [c for c in self.certificates() if c.key_id in with_key and not c.is_ca]

    def chain_for(self, leaf: x509.Certificate, *, include_root: bool = False) -> list[x509.Certificate]:
        """The CA certificates on the token above ``leaf``, nearest first, by subject/issuer name."""
        cas = [c.certificate for c in self.certificates() if c.is_ca]
        chain: list[x509.Certificate] = []
        current = leaf
        while len(chain) < 8:
            parent = next((c for c in cas if c.subject == current.issuer and c not in chain), None)
            if parent is None or parent == current:
                break
            if parent.subject == parent.issuer and not include_root:
                break
            chain.append(parent)
            if parent.subject == parent.issuer:
                break
            current = parent
        return chain

    # -- writing ---------------------------------------------------------------------------

    def generate_key(self, label: str, algorithm: str = "ec-p256") -> tuple[bytes, ec.EllipticCurvePublicKey | rsa.RSAPublicKey]:
        """A new key pair inside the token (sensitive, never extractable); returns (CKA_ID, public key)."""
        if algorithm not in KEY_ALGORITHMS:
            raise TokenError(f"unknown key algorithm {algorithm!r} (one of {', '.join(KEY_ALGORITHMS)})")
        if any(k.label == label for k in self.private_keys()):
            raise TokenError(f"a key labelled {label!r} is already on the USB key")
        key_type, size = KEY_ALGORITHMS[algorithm]
        key_id = secrets.token_bytes(16)
        attributes = {"id": key_id, "label": label[:MAX_LABEL], "store": True}
        private = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True, Attribute.PRIVATE: True}
        public = {Attribute.VERIFY: True, Attribute.PRIVATE: False}
        with self._lock:
            self.login()
            try:
                if key_type == KeyType.EC:
                    curve = self._login_session.create_domain_parameters(
                        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(size)}, local=True
                    )
                    curve.generate_keypair(**attributes, private_template=private, public_template=public)
                else:
                    self._login_session.generate_keypair(KeyType.RSA, size, **attributes, private_template=private, public_template=public)
            except pkcs11.PKCS11Error as exc:
                raise TokenError(f"the USB key did not make a {algorithm} key: {type(exc).__name__} {exc}".strip()) from None
        return key_id, self.public_key(key_id)

    def public_key(self, key_id: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        """The public half of the key ``key_id``: from its public key object, else from its certificate."""
        with self._lock, self._session() as session:
            for obj in session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: key_id}):
                return _cryptography_public_key(obj)
        for stored in self.certificates():
            if stored.key_id == key_id and not stored.is_ca:
                return stored.certificate.public_key()
        raise TokenError(f"no public key or certificate with id {key_id.hex()} on the USB key")

    def sign(self, key_id: bytes, data: bytes) -> tuple[bytes, str]:
        """Sign ``data`` with SHA-256 by the private key ``key_id``: (DER ECDSA or PKCS#1 v1.5 signature, "ec" or "rsa")."""
        self.login()
        with self._lock:
            found = list(self._login_session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: key_id}))
            if not found:
                raise TokenError(f"no private key with id {key_id.hex()} on the USB key")
            key = found[0]
            try:
                if key.key_type == KeyType.EC:
                    # Hash here and sign the digest: not every token has CKM_ECDSA_SHA256 (SoftHSM2 2.6 has not).
                    raw = key.sign(hashlib.sha256(data).digest(), mechanism=Mechanism.ECDSA)
                    half = len(raw) // 2
                    return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")), "ec"
                if key.key_type == KeyType.RSA:
                    return key.sign(data, mechanism=Mechanism.SHA256_RSA_PKCS), "rsa"
            except pkcs11.PKCS11Error as exc:
                raise TokenError(f"the USB key did not sign: {type(exc).__name__} {exc}".strip()) from None
        raise UnsupportedKey("the key is neither EC nor RSA")

    def delete_key(self, key_id: bytes) -> int:
        """Remove a key pair (both halves) and any certificate stored under its id; returns objects removed."""
        removed = 0
        with self._lock, self._session(rw=True, logged_in=True) as session:
            for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE):
                for obj in list(session.get_objects({Attribute.CLASS: cls, Attribute.ID: key_id})):
                    obj.destroy()
                    removed += 1
        return removed

    def store_certificate(self, certificate: x509.Certificate, key_id: bytes, label: str, chain: list[x509.Certificate] = ()) -> None:
        """Store ``certificate`` under its key's CKA_ID, and CA certificates of ``chain`` not there yet."""
        present = {c.fingerprint for c in self.certificates()}
        with self._lock, self._session(rw=True, logged_in=True) as session:
            self._create_certificate(session, certificate, key_id, label, present)
            for ca in chain:
                try:
                    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
                except x509.ExtensionNotFound:
                    ski = hashlib.sha1(ca.public_bytes(serialization.Encoding.DER)).digest()
                name = ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
                ca_label = ("CA " + (name[0].value if name else ca.subject.rfc4514_string()))[:MAX_LABEL]
                self._create_certificate(session, ca, ski, ca_label, present)

    @staticmethod
    def _create_certificate(session, certificate: x509.Certificate, key_id: bytes, label: str, present: set[str]) -> None:
        der = certificate.public_bytes(serialization.Encoding.DER)
        if hashlib.sha256(der).hexdigest() in present:
            return
        template = decode_x509_certificate(der)
        template.update({Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.ID: key_id, Attribute.LABEL: label[:MAX_LABEL]})
        session.create_object(template)
        present.add(hashlib.sha256(der).hexdigest())


def _cryptography_public_key(obj) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    if obj.key_type == KeyType.EC:
        curve = _curve_name(obj)
        if curve is None:
            raise UnsupportedKey("the key is on an elliptic curve hallmark-key does not know")
        point = OctetString.load(obj[Attribute.EC_POINT]).native  # CKA_EC_POINT is a DER OCTET STRING
        return ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[curve], point)
    if obj.key_type == KeyType.RSA:
        exponent = int.from_bytes(obj[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(exponent, int.from_bytes(obj[Attribute.MODULUS], "big")).public_key()
    raise UnsupportedKey("the key is neither EC nor RSA")


def _curve_name(obj) -> str | None:
    """The named curve (one of :data:`_CURVES`) of an EC key object; None for any other curve."""
    params = obj[Attribute.EC_PARAMS]
    return next((name for name in _CURVES if params == encode_named_curve_parameters(name)), None)


def _algorithm(obj) -> str:
    try:
        key_type = obj.key_type
    except pkcs11.PKCS11Error:
        return "unknown"
    if key_type == KeyType.EC:
        return _EC_ALGORITHMS.get(_curve_name(obj), "ec")
    if key_type == KeyType.RSA:
        return f"rsa-{len(obj[Attribute.MODULUS]) * 8}"
    return key_type.name.lower()
