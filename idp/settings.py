"""The identity provider's settings section (``hallmark.toml`` / ``HALLMARK_<NAME>``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from core.settings import ConfigError


@dataclass(frozen=True)
class IdPSettings:
    registry_url: str = ""  # population registry HTTP adapter; empty = the embedded table
    cert_agent_port: int = 17443  # port of the hallmark-key agent on users' PCs (127.0.0.1) that login pages call
    client_cert_header: str = "X-SSL-Client-Cert"  # where a trusted proxy forwards a verified client certificate
    trusted_proxies: str = ""  # addresses/networks whose forwarded client certificates count; empty = that path is off

    def __post_init__(self):
        if not 0 < self.cert_agent_port < 65536:
            raise ConfigError(f"cert_agent_port must be a port number, not {self.cert_agent_port}")
        for proxy in self.trusted_proxies.replace(",", " ").split():
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(f"trusted_proxies: {proxy!r} is not an IP address or network") from None
