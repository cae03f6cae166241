"""The identity provider's settings section (``hallmark.toml`` / ``HALLMARK_<NAME>``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from core.settings import ConfigError


@dataclass(frozen=True)
class IdPSettings:
    logout_retry_seconds: int = 15  # how often undelivered back-channel logout notices are retried; 0 = off
    registry_url: str = ""  # population registry HTTP adapter; empty = the embedded table
    cert_agent_port: int = 17443  # port of the hallmark-key agent on users' PCs (127.0.0.1) that login pages call
    client_cert_header: str = "X-SSL-Client-Cert"  # where a trusted proxy forwards a verified client certificate
    trusted_proxies: str = ""  # addresses/networks whose forwarded client certificates count; empty = that path is off

    def __post_init__(self):
        if self.logout_retry_seconds < 0:
            raise ConfigError(f"logout_retry_seconds must be 0 (off) or more, not {self.logout_retry_seconds}")
        if not 0 < self.cert_agent_port < 65536:
            raise ConfigError(f"cert_agent_port must be a port number, not {self.cert_agent_port}")
        for proxy in self.trusted_proxies.replace(",", " ").split():
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(f"trusted_proxies: {proxy!r} is not an IP address or network") from None
