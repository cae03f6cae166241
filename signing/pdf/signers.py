"""pyHanko signers: one over an HSM key, one over a signature made elsewhere (a USB key).

Both take asn1crypto certificates parsed once, and remember the signature value
they produced, so the caller can record it without parsing the output again.
"""

from __future__ import annotations

from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyhanko.sign.signers.pdf_cms import Signer
from pyhanko_certvalidator.registry import SimpleCertificateStore
from pyhanko_certvalidator.util import get_pyca_cryptography_hash


def signature_size(public_key) -> int:
    """Big enough for any signature of this key (DER ECDSA is at most 2n+9 octets)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return public_key.key_size // 8
    return 2 * ((public_key.key_size + 7) // 8) + 9


class KeySigner(Signer):
    """Signs with a ``cryptography`` private key object, e.g. an HSM key from :mod:`hsm`."""

    def __init__(self, private_key, certificate: asn1_x509.Certificate, chain: list[asn1_x509.Certificate] = ()):
        super().__init__(signing_cert=certificate, cert_registry=SimpleCertificateStore.from_certs(list(chain)))
        self._key = private_key
        self.signature: bytes | None = None

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run=False) -> bytes:
        if dry_run:
            return bytes(signature_size(self._key.public_key()))
        algorithm = get_pyca_cryptography_hash(digest_algorithm)
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            signature = self._key.sign(data, ec.ECDSA(algorithm))
        elif isinstance(self._key, rsa.RSAPrivateKey):
            signature = self._key.sign(data, padding.PKCS1v15(), algorithm)
        else:
            raise TypeError(f"cannot sign with a {type(self._key).__name__}")
        self.signature = signature
        return signature


class GivenSignature(Signer):
    """Hands pyHanko a signature value computed elsewhere (the USB key signed the signed attributes)."""

    def __init__(self, signature: bytes, certificate: asn1_x509.Certificate, chain: list[asn1_x509.Certificate] = ()):
        super().__init__(signing_cert=certificate, cert_registry=SimpleCertificateStore.from_certs(list(chain)))
        self.signature = signature

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run=False) -> bytes:
        return self.signature
