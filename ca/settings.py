"""The certificate authority's settings section (``hallmark.toml`` / ``HALLMARK_<NAME>``)."""

from __future__ import annotations

from dataclasses import dataclass

from core.ratelimit import Limit
from core.settings import ConfigError

LIMITS = ("ocsp_signed", "tsa")


@dataclass(frozen=True)
class CASettings:
    ca_upkeep_seconds: int = 600  # CRL publication and OCSP re-signing in the background; 0 = off
    # Base URL written into certificates for CA certificates, OCSP and CRLs (ca.context.CAContext.url);
    # empty: public_url. Behind a proxy that redirects http to https, set it to the http address whose
    # /pki/ the proxy still serves over http: OCSP and CRL clients do not follow redirects to TLS.
    pki_url: str = ""
    # Limits per client address, shared by every worker and node (core.ratelimit): <name>_burst at once,
    # then <name>_per_minute. OCSP: only answers signed for the request (a nonce, a serial we never issued,
    # several CertIDs); a pre-signed answer is served without counting. TSA: every time-stamp (an HSM signature).
    ocsp_signed_burst: int = 100
    ocsp_signed_per_minute: float = 600
    tsa_burst: int = 60
    tsa_per_minute: float = 300

    def limit(self, name: str) -> Limit:
        return Limit(getattr(self, f"{name}_burst"), getattr(self, f"{name}_per_minute"))

    def __post_init__(self):
        for name in LIMITS:
            try:
                self.limit(name).check(name)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.ca_upkeep_seconds < 0:
            raise ConfigError(f"ca_upkeep_seconds must be 0 (off) or more, not {self.ca_upkeep_seconds}")
        if self.pki_url and not self.pki_url.startswith(("http://", "https://")):
            raise ConfigError(f"pki_url must be an http(s) URL, not {self.pki_url!r}")
