"""The USB key: one token of a PKCS#11 module, as ``hallmark-key`` uses it.

Keys are made and used through :class:`hsm.PKCS11KeyManager` (one login per
process, sessions that survive threads, signers that are ``cryptography`` private
keys). What the key manager does not cover, certificates stored beside the keys,
is done here with python-pkcs11 directly.

A certificate belongs to a key when both carry the same ``CKA_ID``, the PKCS#11
convention every middleware (OpenSC, NSS, the vendors' CSPs) follows. CA
certificates of the chain are stored too, under their subject key identifier.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, ObjectClass
from pkcs11.util.x509 import decode_x509_certificate

from hsm import PKCS11URI, HSMError, KeyAlgorithm, PKCS11KeyManager
from hsm import module as pkcs11_module

PinSource = Callable[[], str]
MAX_LABEL = 64


class TokenError(HSMError):
    """Something about the USB key is not as needed; the message says what, fit for a user."""


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
    try:
        return pkcs11_module.load(module_path)
    except pkcs11.PKCS11Error as exc:
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
        self._manager: PKCS11KeyManager | None = None
        self._token = _load(module_path).get_token(token_label=token_label)

    # -- sessions --------------------------------------------------------------------------

    @property
    def manager(self) -> PKCS11KeyManager:
        """The key manager; logs in (asking for the PIN) on first use."""
        if self._manager is None:
            if self._pin is None:
                raise TokenError("this needs the USB key's PIN")
            self._manager = PKCS11KeyManager(self.module_path, self.label, self._pin)
        return self._manager

    def login(self) -> None:
        """Log in now (a wrong PIN fails here, not at the first signature)."""
        self.manager.keys()

    def _session(self, *, rw: bool = False, logged_in: bool = False):
        # After the manager's login every new session of this process is logged in too;
        # we never log in (or out) from these short sessions ourselves.
        if logged_in:
            self.login()
        try:
            return self._token.open(rw=rw)
        except pkcs11.PKCS11Error as exc:
            raise TokenError(f"cannot open the USB key {self.label!r}: {type(exc).__name__} {exc}".strip()) from None

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- reading ---------------------------------------------------------------------------

    def certificates(self) -> list[StoredCertificate]:
        """Every X.509 certificate object on the token (no PIN needed)."""
        found = []
        with self._session() as session:
            for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}):
                try:
                    certificate = x509.load_der_x509_certificate(obj[Attribute.VALUE])
                except ValueError:
                    continue  # not X.509, or damaged: not ours to use
                found.append(StoredCertificate(_text(obj[Attribute.LABEL]), bytes(obj[Attribute.ID]), certificate))
        return found

    def public_keys(self) -> list[StoredKey]:
        found = []
        with self._session() as session:
            for obj in session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY}):
                found.append(StoredKey(_text(obj.label), bytes(obj[Attribute.ID]), _algorithm(obj), private=False))
        return found

    def private_keys(self) -> list[StoredKey]:
        """Private keys (needs the PIN): they are private objects, invisible before login."""
        return [StoredKey(info.label, PKCS11URI.parse(info.uri).id or b"", info.algorithm, private=True) for info in self.manager.keys()]  # noqa: SIM118

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

    def generate_key(self, label: str, algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256) -> tuple[bytes, object]:
        """A new key pair inside the token (sensitive, never extractable); returns (CKA_ID, public key)."""
        info = self.manager.create_key(label, algorithm)
        return PKCS11URI.parse(info.uri).id, info.public_key

    def signer(self, key_id: bytes):
        """A ``cryptography`` private key whose signatures are made by the token."""
        return self.manager.signer(str(PKCS11URI(path={"token": self.label}, id=key_id)))

    def delete_key(self, key_id: bytes) -> int:
        """Remove a key pair (both halves) and any certificate stored under its id; returns objects removed."""
        removed = 0
        with self._session(rw=True, logged_in=True) as session:
            for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE):
                for obj in list(session.get_objects({Attribute.CLASS: cls, Attribute.ID: key_id})):
                    obj.destroy()
                    removed += 1
        return removed

    def store_certificate(self, certificate: x509.Certificate, key_id: bytes, label: str, chain: list[x509.Certificate] = ()) -> None:
        """Store ``certificate`` under its key's CKA_ID, and CA certificates of ``chain`` not there yet."""
        present = {c.fingerprint for c in self.certificates()}
        with self._session(rw=True, logged_in=True) as session:
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


def _algorithm(obj) -> str:
    try:
        key_type = obj.key_type
    except pkcs11.PKCS11Error:
        return "unknown"
    if key_type == pkcs11.KeyType.EC:
        from pkcs11.util.ec import encode_named_curve_parameters

        params = obj[Attribute.EC_PARAMS]
        for name, alg in (("secp256r1", "ec-p256"), ("secp384r1", "ec-p384")):
            if params == encode_named_curve_parameters(name):
                return alg
        return "ec"
    if key_type == pkcs11.KeyType.RSA:
        return f"rsa-{len(obj[Attribute.MODULUS]) * 8}"
    return key_type.name.lower()
