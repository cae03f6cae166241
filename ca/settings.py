"""The certificate authority's settings section (``hallmark.toml`` / ``HALLMARK_<NAME>``)."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import ConfigError


@dataclass(frozen=True)
class CASettings:
    ca_upkeep_seconds: int = 600  # CRL publication and OCSP re-signing in the background; 0 = off

    def __post_init__(self):
        if self.ca_upkeep_seconds < 0:
            raise ConfigError(f"ca_upkeep_seconds must be 0 (off) or more, not {self.ca_upkeep_seconds}")
