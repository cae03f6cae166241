"""The staff console's settings section (``hallmark.toml`` / ``HALLMARK_<NAME>``)."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import ConfigError


@dataclass(frozen=True)
class AdminSettings:
    admin_idle_minutes: int = 15  # a console session left alone this long ends
    admin_session_hours: int = 8  # and none lasts longer than this, however busy
    admin_reauth_minutes: int = 5  # a critical action needs a USB-key login at most this old (max_age re-authentication)
    admin_proposal_hours: int = 72  # a four-eyes proposal not approved within this time lapses
    # Where the console reaches the identity provider's token endpoint and keys (server to server); empty: public_url.
    # Set it when the nodes cannot reach the public address (a proxy in front that they do not pass through).
    admin_idp_url: str = ""

    def __post_init__(self):
        for name, top in (
            ("admin_idle_minutes", 240),
            ("admin_session_hours", 24),
            ("admin_reauth_minutes", 60),
            ("admin_proposal_hours", 720),
        ):
            value = getattr(self, name)
            if not 0 < value <= top:
                raise ConfigError(f"{name} must be from 1 to {top}, not {value}")
        if self.admin_idp_url and not self.admin_idp_url.startswith(("http://", "https://")):
            raise ConfigError(f"admin_idp_url must be an http(s) URL, not {self.admin_idp_url!r}")
