"""A pyHanko ``Signer`` over any private key of :mod:`hsm.signers`.

pyHanko's own ``PKCS11Signer`` opens its own session and logs in; ours reuses the
key manager's pool, so a server process keeps one login and signs from several
threads.
"""

from __future__ import annotations

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.sign.signers.pdf_cms import Signer
from pyhanko_certvalidator.registry import SimpleCertificateStore
from pyhanko_certvalidator.util import get_pyca_cryptography_hash, process_pss_params

from hsm.errors import UnsupportedAlgorithm


class HSMSigner(Signer):
    def __init__(self, private_key, certificate: x509.Certificate, chain: list[x509.Certificate] = (), **kwargs):
        to_asn1 = lambda c: asn1_x509.Certificate.load(c.public_bytes(Encoding.DER))  # noqa: E731
        registry = SimpleCertificateStore.from_certs([to_asn1(c) for c in chain])
        super().__init__(signing_cert=to_asn1(certificate), cert_registry=registry, **kwargs)
        self._key = private_key

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run=False) -> bytes:
        mechanism = self.get_signature_mechanism_for_digest(digest_algorithm)
        name = mechanism.signature_algo
        if dry_run:
            # Big enough for any signature of this key; pyHanko only sizes the CMS with it.
            size = self._key.key_size // 8 if isinstance(self._key, rsa.RSAPrivateKey) else 2 * (self._key.key_size // 8) + 9
            return bytes(size)
        if name == "rsassa_pkcs1v15":
            return self._key.sign(data, padding.PKCS1v15(), get_pyca_cryptography_hash(digest_algorithm))
        if name == "rsassa_pss":
            pss, hash_algo = process_pss_params(mechanism["parameters"])
            return self._key.sign(data, pss, hash_algo)
        if name == "ecdsa":
            return self._key.sign(data, ec.ECDSA(get_pyca_cryptography_hash(digest_algorithm)))
        raise UnsupportedAlgorithm(f"signature mechanism {name!r} is not supported by HSM keys")
