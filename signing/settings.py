"""Trusted electronic files' settings section (``hallmark.toml`` / ``HALLMARK_<NAME>``)."""

from __future__ import annotations

from dataclasses import dataclass

from core.ratelimit import Limit
from core.settings import ConfigError


@dataclass(frozen=True)
class SigningSettings:
    # Validations (POST /api/validate, /validate and /verify/<id> with a file) per client address, shared by
    # every worker and node (core.ratelimit): validate_burst at once, then validate_per_minute.
    validate_burst: int = 10
    validate_per_minute: float = 20
    # What a validated PDF may hold, read from its structure before any signature is checked (413 past them).
    validate_max_pages: int = 2000
    validate_max_revisions: int = 100  # incremental updates (cross-reference sections)
    validate_max_signatures: int = 50  # signature fields with a value, document timestamps included
    # One validation's bound in time: fetching external CAs' CRLs and OCSP answers is what can wait (503 past it).
    validate_timeout_seconds: int = 30

    def limit(self, name: str) -> Limit:
        return Limit(getattr(self, f"{name}_burst"), getattr(self, f"{name}_per_minute"))

    def __post_init__(self):
        try:
            self.limit("validate").check("validate")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        for name in ("validate_max_pages", "validate_max_revisions", "validate_max_signatures"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be 1 or more, not {getattr(self, name)}")
        if not 1 <= self.validate_timeout_seconds <= 600:
            raise ConfigError(f"validate_timeout_seconds must be from 1 to 600, not {self.validate_timeout_seconds}")
