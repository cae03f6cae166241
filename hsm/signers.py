"""Private keys that stay in the token but look like ``cryptography`` keys.

``CertificateBuilder.sign()``, CSR, CRL and OCSP builders accept these and call
``sign()``; the signature is computed by the token. Nothing here can export key
material: ``private_bytes``/``private_numbers`` refuse.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from pkcs11 import MGF, Mechanism

from hsm.errors import HSMError, UnsupportedAlgorithm


class TokenSigner(Protocol):
    """What a key object needs from the key manager that made it: a signature by the token.

    (``hsm.pkcs11_manager.PKCS11KeyManager`` is one; this module does not import it,
    so the manager can import the key classes without an import circle.)
    """

    def sign_with(self, key_id: bytes, data: bytes, mechanism: Mechanism, mechanism_param=None) -> bytes: ...


_RSA_PKCS1 = {
    "sha256": Mechanism.SHA256_RSA_PKCS,
    "sha384": Mechanism.SHA384_RSA_PKCS,
    "sha512": Mechanism.SHA512_RSA_PKCS,
}
_RSA_PSS = {
    "sha256": Mechanism.SHA256_RSA_PKCS_PSS,
    "sha384": Mechanism.SHA384_RSA_PKCS_PSS,
    "sha512": Mechanism.SHA512_RSA_PKCS_PSS,
}
_HASH_MECH = {"sha256": (Mechanism.SHA256, MGF.SHA256), "sha384": (Mechanism.SHA384, MGF.SHA384), "sha512": (Mechanism.SHA512, MGF.SHA512)}
# DER DigestInfo prefixes (RFC 8017 section 9.2, note 1) for signing a digest made elsewhere.
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}


def _no_export(*_args, **_kwargs):
    raise HSMError("private keys never leave the HSM")


def _split_hash(algorithm) -> tuple[str, bool]:
    """(hash name, data is already a digest)."""
    prehashed = isinstance(algorithm, utils.Prehashed)
    name = (algorithm._algorithm if prehashed else algorithm).name
    if name not in _DIGEST_INFO:
        raise UnsupportedAlgorithm(f"hash {name!r} is not supported; use SHA-256, SHA-384 or SHA-512")
    return name, prehashed


class _HSMKey:
    def __init__(self, manager: TokenSigner, key_id: bytes, uri: str, public_key):
        self._manager = manager
        self._key_id = key_id
        self._public_key = public_key
        self.uri = uri

    def public_key(self):
        return self._public_key

    @property
    def key_size(self) -> int:
        return self._public_key.key_size

    private_bytes = _no_export
    private_numbers = _no_export

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __repr__(self):
        return f"<{type(self).__name__} {self.uri}>"


class HSMRSAPrivateKey(_HSMKey, rsa.RSAPrivateKey):
    def sign(self, data: bytes, padding_: padding.AsymmetricPadding, algorithm) -> bytes:
        name, prehashed = _split_hash(algorithm)
        if isinstance(padding_, padding.PKCS1v15):
            if prehashed:
                return self._manager.sign_with(self._key_id, _DIGEST_INFO[name] + data, Mechanism.RSA_PKCS)
            return self._manager.sign_with(self._key_id, data, _RSA_PKCS1[name])
        if isinstance(padding_, padding.PSS):
            mgf_hash = padding_.mgf._algorithm.name
            if mgf_hash != name:
                raise UnsupportedAlgorithm("PSS with an MGF1 hash other than the message hash is not supported")
            hash_algorithm = algorithm._algorithm if prehashed else algorithm
            salt = padding_._salt_length
            if isinstance(salt, (padding._MaxLength, padding._Auto)):
                salt = padding.calculate_max_pss_salt_length(self, hash_algorithm)
            elif isinstance(salt, padding._DigestLength):
                salt = hash_algorithm.digest_size
            hash_mech, mgf = _HASH_MECH[name]
            param = (hash_mech, mgf, salt)
            if prehashed:
                return self._manager.sign_with(self._key_id, data, Mechanism.RSA_PKCS_PSS, param)
            return self._manager.sign_with(self._key_id, data, _RSA_PSS[name], param)
        raise UnsupportedAlgorithm(f"RSA padding {padding_.name!r} is not supported")

    def decrypt(self, ciphertext, padding_):
        raise UnsupportedAlgorithm("HSM keys made by Hallmark are for signing only")


class HSMECPrivateKey(_HSMKey, ec.EllipticCurvePrivateKey):
    @property
    def curve(self):
        return self._public_key.curve

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise UnsupportedAlgorithm("only ECDSA signatures are supported")
        if type(signature_algorithm.algorithm) is hashes.SHA256:  # the common case, without the lookups below
            digest = hashlib.sha256(data).digest()
        else:
            name, prehashed = _split_hash(signature_algorithm.algorithm)
            digest = data if prehashed else hashlib.new(name, data).digest()
        # SoftHSM2 2.6 has no CKM_ECDSA_SHA256: hash here, sign raw, DER-encode r||s.
        raw = self._manager.sign_with(self._key_id, digest, Mechanism.ECDSA)
        half = len(raw) // 2
        return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    def exchange(self, algorithm, peer_public_key):
        raise UnsupportedAlgorithm("HSM keys made by Hallmark are for signing only")
