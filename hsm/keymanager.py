"""The key-manager interface every key store implements (step-ca's ``KeyManager``)."""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from hsm.errors import UnsupportedAlgorithm


class KeyAlgorithm(enum.Enum):
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"

    @classmethod
    def parse(cls, text: str) -> KeyAlgorithm:
        try:
            return cls(text.lower())
        except ValueError:
            names = ", ".join(a.value for a in cls)
            raise UnsupportedAlgorithm(f"unsupported key algorithm {text!r}; choose one of {names}") from None

    @property
    def is_rsa(self) -> bool:
        return self.value.startswith("rsa")

    @property
    def bits(self) -> int:
        return {"rsa-2048": 2048, "rsa-3072": 3072, "ec-p256": 256, "ec-p384": 384}[self.value]


@dataclass(frozen=True)
class KeyInfo:
    uri: str
    label: str
    algorithm: str  # e.g. "rsa-2048", "ec-p256"
    public_key: PublicKeyTypes = field(repr=False, compare=False)


@dataclass(frozen=True)
class TokenStatus:
    ok: bool
    module: str
    token: str
    detail: str = ""
    manufacturer: str = ""
    model: str = ""
    serial: str = ""

    def as_dict(self) -> dict:
        return {
            "status": "ok" if self.ok else "error",
            "module": self.module,
            "token": self.token,
            **({"detail": self.detail} if self.detail else {}),
            **({"manufacturer": self.manufacturer, "model": self.model} if self.ok else {}),
        }


class KeyManager(abc.ABC):
    """Create, find and use keys that never leave their store."""

    @abc.abstractmethod
    def create_key(self, label: str, algorithm: KeyAlgorithm) -> KeyInfo:
        """Generate a key pair inside the store and return its URI and public key."""

    @abc.abstractmethod
    def public_key(self, uri: str) -> PublicKeyTypes:
        """The public key of the key named by ``uri``."""

    @abc.abstractmethod
    def signer(self, uri: str) -> PrivateKeyTypes:
        """A ``cryptography`` private key whose ``sign()`` runs inside the store."""

    @abc.abstractmethod
    def secret_key(self, label: str) -> str:
        """The URI of the AES-256 secret key labelled ``label``, created in the store if absent."""

    @abc.abstractmethod
    def encrypt(self, uri: str, plaintext: bytes, aad: bytes = b"") -> bytes:
        """``plaintext`` encrypted and authenticated (with ``aad``) by the secret key ``uri``, inside the store."""

    @abc.abstractmethod
    def decrypt(self, uri: str, blob: bytes, aad: bytes = b"") -> bytes:
        """The plaintext of what ``encrypt`` returned; ``CiphertextInvalid`` if it was altered or ``aad`` differs."""

    @abc.abstractmethod
    def keys(self) -> list[KeyInfo]:
        """Every private key in the store."""

    @abc.abstractmethod
    def status(self) -> TokenStatus:
        """Whether the store can be used now (cheap; safe to call per request)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release sessions. The manager reopens them if used again."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
