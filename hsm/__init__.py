"""Keys in a PKCS#11 token.

One small key-manager interface (modelled on step-ca's ``KeyManager``): create a
key inside the token, get its public key, get a signer, close; and AES secret keys
that encrypt and decrypt (AES-GCM) inside the token. Keys are named by
RFC 7512 ``pkcs11:`` URIs. Signers work as ``cryptography`` private keys and as
pyHanko signers, while the private key never leaves the token.

This package imports nothing else of the project.
"""

from hsm.errors import (
    CiphertextInvalid,
    HSMError,
    KeyNotFound,
    MalformedURI,
    ModuleNotLoadable,
    PinIncorrect,
    PinLocked,
    TokenNotFound,
    TokenUnavailable,
    UnsupportedAlgorithm,
)
from hsm.keymanager import KeyAlgorithm, KeyInfo, KeyManager, TokenStatus
from hsm.pkcs11_manager import PKCS11KeyManager
from hsm.uri import PKCS11URI

__all__ = [
    "PKCS11URI",
    "CiphertextInvalid",
    "HSMError",
    "KeyAlgorithm",
    "KeyInfo",
    "KeyManager",
    "KeyNotFound",
    "MalformedURI",
    "ModuleNotLoadable",
    "PKCS11KeyManager",
    "PinIncorrect",
    "PinLocked",
    "TokenNotFound",
    "TokenStatus",
    "TokenUnavailable",
    "UnsupportedAlgorithm",
]
