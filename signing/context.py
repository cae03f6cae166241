"""What every signing service needs: the CA context, the public URL, limits, our timestamper."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import timedelta

from ca.context import CAContext
from signing.pdf import reading as pdfinput
from signing.settings import SigningSettings
from signing.trust import OwnTimeStamper

NAME = "signing"  # the signing component's name: the key of its service (core.component.service)


def current(app=None) -> SigningContext:
    """The signing service on the current Flask app (put there by the composition root)."""
    from core import component

    return component.service(NAME, app)


@dataclass
class SigningContext:
    ca: CAContext
    public_url: str
    max_pdf_bytes: int = pdfinput.MAX_PDF_BYTES
    remote_session_lifetime: timedelta = timedelta(minutes=10)
    settings: SigningSettings = field(default_factory=SigningSettings)  # the section as loaded (limits, caps)
    cache: dict = field(default_factory=dict, repr=False)  # per-process caches owned by service modules
    _timestampers: threading.local = field(default_factory=threading.local, repr=False)

    @property
    def caps(self) -> pdfinput.Caps:
        """What a PDF to validate may hold (signing.pdf.reading.check_caps)."""
        own = self.settings
        return pdfinput.Caps(own.validate_max_pages, own.validate_max_revisions, own.validate_max_signatures)

    def validate(self, data: bytes) -> dict:
        """The validation report of ``data`` (signing.report.validate) within this service's limits, records linked."""
        from signing import report

        return report.validate(
            self.ca, data, limit=self.max_pdf_bytes, with_records=True, caps=self.caps, timeout=self.settings.validate_timeout_seconds
        )

    @property
    def sessions(self):
        return self.ca.sessions

    def verify_url(self, document_id: str) -> str:
        return self.public_url.rstrip("/") + f"/verify/{document_id}"

    def timestamper(self) -> OwnTimeStamper:
        """One per thread: pyHanko's timestamper caches a sizing response and TSA certificates in itself."""
        found = getattr(self._timestampers, "value", None)
        if found is None:
            found = self._timestampers.value = OwnTimeStamper(self.ca)
        return found
