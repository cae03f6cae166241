"""Certificate profiles: read ``profiles.toml`` and check it, once, at start-up."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

PROFILES_FILE = Path(__file__).with_name("profiles.toml")

KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
EKUS = {
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING,
    "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING,
}
SUBJECT_KINDS = ("person", "enterprise", "department", "server", "service")
SUBJECT_IDS = ("resident_id", "credit_code", "none")
KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072")


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    issuer: str  # an authority name, or "*" for "whichever CA asks" (OCSP responders)
    subject: str
    subject_id: str
    validity_days: int
    key_types: tuple[str, ...]
    key_usage: tuple[str, ...]
    extended_key_usage: tuple[str, ...]
    eku_critical: bool
    policies: tuple[str, ...]
    aia: bool
    crl_dp: bool
    ocsp_no_check: bool

    def key_usage_extension(self) -> x509.KeyUsage:
        flags = {name: name in self.key_usage for name in KEY_USAGES}
        return x509.KeyUsage(**flags)

    def eku_extension(self) -> x509.ExtendedKeyUsage | None:
        if not self.extended_key_usage:
            return None
        return x509.ExtendedKeyUsage([EKUS[name] for name in self.extended_key_usage])


def _parse(name: str, raw: dict) -> Profile:
    def need(key, kind):
        if key not in raw:
            raise ProfileError(f"profile {name!r}: {key} is missing")
        if not isinstance(raw[key], kind):
            raise ProfileError(f"profile {name!r}: {key} has the wrong type")
        return raw[key]

    profile = Profile(
        name=name,
        description=need("description", str),
        issuer=need("issuer", str),
        subject=need("subject", str),
        subject_id=need("subject_id", str),
        validity_days=need("validity_days", int),
        key_types=tuple(need("key_types", list)),
        key_usage=tuple(need("key_usage", list)),
        extended_key_usage=tuple(need("extended_key_usage", list)),
        eku_critical=bool(raw.get("eku_critical", False)),
        policies=tuple(need("policies", list)),
        aia=bool(raw.get("aia", True)),
        crl_dp=bool(raw.get("crl_dp", True)),
        ocsp_no_check=bool(raw.get("ocsp_no_check", False)),
    )
    checks = [
        (profile.subject in SUBJECT_KINDS, f"subject must be one of {SUBJECT_KINDS}"),
        (profile.subject_id in SUBJECT_IDS, f"subject_id must be one of {SUBJECT_IDS}"),
        (0 < profile.validity_days <= 3650, "validity_days must be 1..3650"),
        (set(profile.key_types) <= set(KEY_TYPES) and profile.key_types, f"key_types must be from {KEY_TYPES}"),
        (set(profile.key_usage) <= set(KEY_USAGES) and profile.key_usage, "key_usage has an unknown name"),
        (set(profile.extended_key_usage) <= set(EKUS), f"extended_key_usage must be from {sorted(EKUS)}"),
        (not {"key_cert_sign", "crl_sign"} & set(profile.key_usage), "end-entity profiles cannot sign certificates"),
    ]
    for ok, message in checks:
        if not ok:
            raise ProfileError(f"profile {name!r}: {message}")
    for oid in profile.policies:
        try:
            x509.ObjectIdentifier(oid)
        except ValueError:
            raise ProfileError(f"profile {name!r}: {oid!r} is not an OID") from None
    return profile


@functools.cache
def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: {exc}") from None


def policy_arc(path: Path = PROFILES_FILE) -> str:
    arc = _read(path).get("policy_arc")
    if not isinstance(arc, str):
        raise ProfileError(f"{path}: policy_arc is missing")
    if any(int(part) >= 2**32 for part in arc.split(".")):
        raise ProfileError(f"{path}: every arc of policy_arc must fit in 32 bits")
    return arc


@functools.cache
def load(path: Path = PROFILES_FILE) -> dict[str, Profile]:
    arc = policy_arc(path)
    profiles = {}
    for name, body in _read(path).items():
        if name == "policy_arc":
            continue
        body = {**body, "policies": [oid.replace("{arc}", arc) for oid in body.get("policies", [])]}
        profiles[name] = _parse(name, body)
    return profiles


def get(name: str) -> Profile:
    profiles = load()
    if name not in profiles:
        raise ProfileError(f"unknown profile {name!r}; known profiles: {', '.join(profiles)}")
    return profiles[name]
