"""Compact JWS (RFC 7515) signed by any ``cryptography`` private key, and public keys as JWK.

The private key may be one that never leaves an HSM (``hsm`` hands out key
objects whose ``sign()`` runs in the token): the signing input is built here
and only the signature is asked of the key, so no JOSE library ever needs to
export or even recognise it. ECDSA keys sign DER, which JWS does not want; the
signature is turned into the fixed-size raw ``r || s`` of RFC 7518 section 3.4.

Verification is not here: verifiers use a JOSE library (joserfc) on the
published JWK, which also keeps the signing side honest.
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

# alg -> (hash, EC curve or None for RSA PKCS#1 v1.5)
_ALGORITHMS: dict[str, tuple[hashes.HashAlgorithm, type[ec.EllipticCurve] | None]] = {
    "ES256": (hashes.SHA256(), ec.SECP256R1),
    "ES384": (hashes.SHA384(), ec.SECP384R1),
    "ES512": (hashes.SHA512(), ec.SECP521R1),
    "RS256": (hashes.SHA256(), None),
    "RS384": (hashes.SHA384(), None),
    "RS512": (hashes.SHA512(), None),
}
ALGORITHMS = tuple(_ALGORITHMS)
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_PKCS1V15 = padding.PKCS1v15()
# Built once: per token they cost more than the Python around an HSM call.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_ECDSA = {alg: ec.ECDSA(hash_) for alg, (hash_, curve) in _ALGORITHMS.items() if curve is not None}


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64_bytes(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _check_alg(alg: str) -> None:
    if alg not in _ALGORITHMS:
        raise ValueError(f"unsupported JWS algorithm {alg!r}; choose one of {', '.join(ALGORITHMS)}")


def encode_header(header: dict) -> bytes:
    """The protected header as it goes into the token (base64url of compact JSON).

    Cache it when the same header signs many tokens; see :func:`sign_encoded`.
    """
    if "alg" not in header:
        raise ValueError("a JWS header needs its alg")
    _check_alg(header["alg"])
    return _b64_bytes(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def sign_encoded(encoded_header: bytes, claims: dict, private_key, alg: str) -> str:
    """A compact JWS of ``claims`` under a header already encoded by :func:`encode_header` (whose alg is ``alg``)."""
    signing_input = encoded_header + b"." + _b64_bytes(_JSON(claims).encode("utf-8"))
    return (signing_input + b"." + _b64_bytes(signature(signing_input, private_key, alg))).decode("ascii")


def compact(header: dict, claims: dict, private_key, alg: str) -> str:
    """A compact JWS of the JSON ``claims``; ``header`` gets ``alg`` (it must not say another)."""
    if header.get("alg", alg) != alg:
        raise ValueError(f"the header says alg {header['alg']!r} but the key signs {alg!r}")
    return sign_encoded(encode_header({"alg": alg, **header}), claims, private_key, alg)


def signature(signing_input: bytes, private_key, alg: str) -> bytes:
    """The JWS signature of ``signing_input``: raw ``r || s`` for ECDSA, PKCS#1 v1.5 for RSA."""
    ecdsa = _ECDSA.get(alg)
    if ecdsa is not None:
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(private_key.curve, _ALGORITHMS[alg][1]):
            raise ValueError(f"{alg} needs an EC key on {_ALGORITHMS[alg][1].name}")
        r, s = utils.decode_dss_signature(private_key.sign(signing_input, ecdsa))
        size = (private_key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    _check_alg(alg)
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ValueError(f"{alg} needs an RSA key")
    return private_key.sign(signing_input, _PKCS1V15, _ALGORITHMS[alg][0])


def _int(value: int, size: int | None = None) -> str:
    size = size or max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(size, "big"))


def _required_members(public_key) -> dict:
    """The members of an RFC 7638 thumbprint, which are also the whole public JWK apart from metadata."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        crv = _CURVE_NAMES.get(public_key.curve.name)
        if crv is None:
            raise ValueError(f"no JOSE name for the curve {public_key.curve.name}")
        numbers = public_key.public_numbers()
        size = (public_key.curve.key_size + 7) // 8
        return {"crv": crv, "kty": "EC", "x": _int(numbers.x, size), "y": _int(numbers.y, size)}
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {"e": _int(numbers.e), "kty": "RSA", "n": _int(numbers.n)}
    raise ValueError(f"no JWK for a {type(public_key).__name__}")


def thumbprint(public_key) -> str:
    """The RFC 7638 SHA-256 thumbprint of the public key, base64url (our ``kid`` everywhere)."""
    members = _required_members(public_key)  # already in lexicographic order
    return b64url(hashlib.sha256(json.dumps(members, separators=(",", ":")).encode("ascii")).digest())


def public_jwk(public_key, alg: str, kid: str | None = None) -> dict:
    """The public key as a JWK for signature checks with ``alg``; ``kid`` defaults to the thumbprint."""
    _check_alg(alg)
    if hasattr(public_key, "public_key") and not isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        public_key = public_key.public_key()  # a private key (an HSM one included) stands for its public half
    curve = _ALGORITHMS[alg][1]
    if (curve is None) != isinstance(public_key, rsa.RSAPublicKey) or (curve is not None and not isinstance(public_key.curve, curve)):
        raise ValueError(f"this key cannot verify {alg}")
    return {**_required_members(public_key), "kid": kid or thumbprint(public_key), "use": "sig", "alg": alg}
