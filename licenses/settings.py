"""The licence library's settings section (``hallmark.toml`` ``[licenses]`` / ``HALLMARK_<NAME>``)."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import ConfigError


@dataclass(frozen=True)
class LicencesSettings:
    show_qr_seconds: int = 180  # how long a 亮证 QR code shown on a phone stays valid
    status_list_size: int = 131072  # bits in each new W3C Bitstring Status List (at least 131,072, the spec's minimum)
    status_list_ttl_seconds: int = 300  # how long verifiers may cache a status list (Cache-Control max-age and the list's ttl)
    expiry_seconds: int = 3600  # how often a worker moves licences past their validity to expired (0: off)
    file_qr_days: int = 3650  # how long the offline payload in a licence file's QR code stays valid
    copy_days: int = 30  # the longest a stamped copy (加注件) may be valid for
    consent_max_days: int = 90  # the longest a holder's consent (authorization_details) may last
    seal_pending_seconds: int = 60  # how often a worker seals the files of imported licences (0: off)
    # Hosts (or host:port), space-separated, whose event endpoints may use http or private
    # addresses: intranet or development subscribers. Others must be https on public addresses.
    event_endpoint_hosts: str = ""
    request_days: int = 5  # working days (Monday to Friday) a department has to answer a request for a missing licence (索取)

    def __post_init__(self):
        for name in ("show_qr_seconds", "file_qr_days", "copy_days", "consent_max_days", "request_days"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be more than 0, not {getattr(self, name)}")
        if self.seal_pending_seconds < 0:
            raise ConfigError(f"seal_pending_seconds must be 0 (off) or more, not {self.seal_pending_seconds}")
        if self.show_qr_seconds > 3600:
            raise ConfigError("show_qr_seconds is at most 3600: a counter QR code is meant to expire within minutes")
        if self.status_list_size < 131072 or self.status_list_size % 8:
            raise ConfigError(f"status_list_size must be a multiple of 8 and at least 131072 (herd privacy), not {self.status_list_size}")
        if self.status_list_ttl_seconds <= 0:
            raise ConfigError(f"status_list_ttl_seconds must be more than 0, not {self.status_list_ttl_seconds}")
        if self.expiry_seconds < 0:
            raise ConfigError(f"expiry_seconds must be 0 (off) or more, not {self.expiry_seconds}")
