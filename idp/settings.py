"""The identity provider's settings section (``hallmark.toml`` / ``HALLMARK_<NAME>``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from core.ratelimit import Limit
from core.settings import ConfigError

LIMITS = ("register", "password_check", "cert_challenge")


@dataclass(frozen=True)
class IdPSettings:
    registry_url: str = ""  # population registry HTTP adapter; empty = the embedded table
    # How the adapter proves itself to the registry gateway: a bearer token, or mutual TLS with a client
    # certificate and key (PEM files); registry_ca_file: the CA bundle the gateway's certificate must chain to
    # (empty: the system's). registry_timeout_seconds bounds each call (connect and each read).
    registry_token: str = field(default="", repr=False)
    registry_client_cert: str = ""
    registry_client_key: str = ""
    registry_ca_file: str = ""
    registry_timeout_seconds: int = 5
    cert_agent_port: int = 17443  # port of the hallmark-key agent on users' PCs (127.0.0.1) that login pages call
    client_cert_header: str = "X-SSL-Client-Cert"  # where a trusted proxy forwards a verified client certificate
    # trusted_proxies (whose forwarded client certificates count; empty: that path is off) is a shared setting of core.
    # The login guard (idp.people.loginguard): no lockout; each wrong password is remembered login_failure_minutes per
    # name and per client address; past login_free_failures an attempt needs a solved proof-of-work challenge of
    # login_pow_base numbers, doubling with each failure up to login_pow_max, sent no earlier than 0, 1, 3, 7 ... seconds
    # (at most login_delay_max_seconds) after it was issued; the owner is told after login_notice_after failures.
    login_free_failures: int = 3
    login_failure_minutes: float = 5
    login_pow_base: int = 20000
    login_pow_max: int = 1000000
    login_delay_max_seconds: int = 8
    login_notice_after: int = 10
    # Text codes (idp.people.phone): the highest level an SMS-only login reaches (RFC 8176 "sms"), and the levels at
    # which a password alone is not enough and a second factor (a text code to the confirmed number) is asked for.
    sms_login_level: int = 1
    second_factor_levels: str = ""  # e.g. "2": level 2 needs pwd + sms (amr "mfa")
    # Limits (core.ratelimit, shared by every worker and node): <name>_burst attempts at once, then <name>_per_minute.
    register_burst: int = 10  # registrations per client address (each costs an argon2 hash)
    register_per_minute: float = 0.5
    password_check_burst: int = 5  # wrong current passwords on the account page, per account
    password_check_per_minute: float = 0.2
    cert_challenge_burst: int = 30  # USB-key login challenges per client address (each a stored row)
    cert_challenge_per_minute: float = 30
    # Privacy (issue 16 item 6): the version of the notice in force (its text: idp.people.privacy_notices), the
    # cooling-off before a closure asked for is carried out, how often the closure job looks, and how long a closed
    # account's records are kept before they are deleted.
    privacy_version: str = "2026-12"
    closure_cooling_off_days: int = 15
    closure_job_seconds: int = 3600
    closed_retention_days: int = 180
    # Branding of the resident pages (issue 16 item 7): the service's name, a logo (a path on this site or empty),
    # the main colour (#rrggbb), the service hotline and the ICP filing number (备案号) shown in every footer.
    brand_name: str = ""  # empty: the name in the translations (网上办事大厅统一身份认证)
    brand_logo: str = ""
    brand_colour: str = "#0b4f9c"
    hotline: str = "12345"
    icp_filing: str = ""

    @property
    def second_factor_at(self) -> frozenset[int]:
        return frozenset(int(level) for level in self.second_factor_levels.split())

    def limit(self, name: str) -> Limit:
        return Limit(getattr(self, f"{name}_burst"), getattr(self, f"{name}_per_minute"))

    def __post_init__(self):
        for name in LIMITS:
            try:
                self.limit(name).check(name)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.registry_url:
            try:
                check_registry_url(self.registry_url)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if bool(self.registry_client_cert) != bool(self.registry_client_key):
            raise ConfigError("registry_client_cert and registry_client_key go together (mutual TLS needs both)")
        if not 0 < self.registry_timeout_seconds <= 60:
            raise ConfigError(f"registry_timeout_seconds must be from 1 to 60, not {self.registry_timeout_seconds}")
        from idp.people import privacy_notices

        if self.privacy_version not in privacy_notices.NOTICES:
            raise ConfigError(f"privacy_version must be one of {', '.join(privacy_notices.NOTICES)}, not {self.privacy_version!r}")
        if not 0 <= self.closure_cooling_off_days <= 365 or not 0 < self.closed_retention_days <= 3650:
            raise ConfigError("closure_cooling_off_days must be 0 to 365 and closed_retention_days 1 to 3650")
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", self.brand_colour):
            raise ConfigError(f"brand_colour must be #rrggbb, not {self.brand_colour!r}")
        if self.brand_logo and not (self.brand_logo.startswith("/") and not self.brand_logo.startswith("//")):
            raise ConfigError(f"brand_logo must be a path on this site (/...), not {self.brand_logo!r}")
        if self.login_free_failures < 0 or self.login_failure_minutes <= 0 or self.login_notice_after < 1:
            raise ConfigError("login_free_failures must be 0 or more, login_failure_minutes more than 0, login_notice_after 1 or more")
        if not 1 <= self.login_pow_base <= self.login_pow_max <= 100_000_000 or not 0 <= self.login_delay_max_seconds <= 600:
            raise ConfigError("login_pow_base must be from 1 to login_pow_max (at most 100000000), login_delay_max_seconds 0 to 600")
        if self.sms_login_level not in (0, 1):
            raise ConfigError(f"sms_login_level must be 0 (no SMS login) or 1, not {self.sms_login_level}")
        if not set(self.second_factor_levels.split()) <= {"2"}:
            raise ConfigError(
                f"second_factor_levels may list level 2 only (level 1 is the password, level 3 has its USB key), not {self.second_factor_levels!r}"
            )
        if not 0 < self.cert_agent_port < 65536:
            raise ConfigError(f"cert_agent_port must be a port number, not {self.cert_agent_port}")


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def check_registry_url(url: str) -> None:
    """The registry gateway is called over https; plain http only to this machine (a development gateway).

    A resident's ID and name must not cross a network in the clear.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"registry_url must be an https URL, not {url!r}")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError(
            f"registry_url must use https: plain http carries resident IDs in the clear, and is allowed only to "
            f"this machine ({', '.join(LOOPBACK_HOSTS)}) for development, not to {parts.hostname}"
        )
