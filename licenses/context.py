"""What every licence-library service needs: the database, the HSM, the signing service, settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from licenses.settings import LicencesSettings
from signing.context import SigningContext

NAME = "licenses"  # the component's name: the key of its service and its settings section
ACTOR = "system:licences"


def current(app=None) -> LicencesContext:
    """The licence library's service on the current Flask app (put there by the composition root)."""
    from core import component

    return component.service(NAME, app)


@dataclass
class LicencesContext:
    signing: SigningContext
    keys: Any  # hsm.KeyManager: the data-key wrapping key and the receipt/QR signing key live in it
    public_url: str
    lookup_key: bytes  # keys the holder-code lookup hash (the same key the identity provider uses)
    settings: LicencesSettings = field(default_factory=LicencesSettings)
    people: Any = None  # core.people.PeopleDirectory, offered by the identity provider
    _cache: dict = field(default_factory=dict, repr=False)  # per-process caches of the service modules

    @property
    def sessions(self):
        return self.signing.sessions

    def url(self, path: str) -> str:
        return self.public_url.rstrip("/") + path

    def verify_url(self, identifier: str) -> str:
        """The public verification page of a licence (what its QR code opens)."""
        return self.url(f"/licences/verify/{identifier}")
