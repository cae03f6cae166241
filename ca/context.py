"""What every CA service needs at hand: database sessions, the HSM, the public URL.

Built once per process by the composition root. Authority certificates and HSM
signers are immutable once loaded, so they are cached here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from cryptography import x509
from sqlalchemy.orm import Session, sessionmaker

from ca.models import Authority
from ca.settings import CASettings
from core.db import read_only
from core.problems import Problem
from hsm import KeyManager

NAME = "ca"  # the CA component's name: the key of its service (core.component.service) and its settings section


def current(app=None) -> CAContext:
    """The CA's service on the current Flask app (put there by the composition root)."""
    from core import component

    return component.service(NAME, app)


@dataclass
class LoadedAuthority:
    name: str
    role: str
    parent: str | None
    certificate: x509.Certificate
    der: bytes
    key_uri: str


@dataclass
class CAContext:
    sessions: sessionmaker[Session]
    keys: KeyManager
    public_url: str
    lookup_key: bytes
    # Base of the URLs written into certificates (CA issuers, OCSP, CRL); empty: public_url.
    # Relying parties fetch these over plain http (RFC 5280 4.2.2.1, RFC 6960 A.1), so a site
    # served only over https puts its http address here (the ca section's pki_url).
    pki_url: str = ""
    settings: CASettings = field(default_factory=CASettings)  # the section as loaded (limits)
    cache: dict = field(default_factory=dict, repr=False)  # per-process caches owned by service modules
    _signers: dict = field(default_factory=dict, repr=False)
    _authorities: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _forgotten: int = field(default=0, repr=False)  # times forget_authorities ran: a read from before is not kept

    def url(self, path: str) -> str:
        """``path`` under the PKI base URL (``pki_url``, else ``public_url``): what certificates point to."""
        return (self.pki_url or self.public_url).rstrip("/") + path

    def signer(self, key_uri: str):
        signer = self._signers.get(key_uri)
        if signer is None:
            signer = self._signers[key_uri] = self.keys.signer(key_uri)
        return signer

    def authority(self, name: str, session: Session | None = None) -> LoadedAuthority:
        loaded = self._authorities.get(name)
        if loaded is not None:
            return loaded
        forgotten = self._forgotten
        # Read without holding the lock: on SQLite every writing transaction holds the database's write
        # lock (core.db), so a thread waiting here for the database with the lock held would stop a thread
        # that holds the write lock and asks for an authority in its own session, each waiting for the
        # other until the busy timeout. Two threads may read the same row; the first one kept wins.
        if session is None:
            with read_only(self.sessions) as own:
                row = own.get(Authority, name)
        else:
            row = session.get(Authority, name)
        if row is None:
            raise Problem(404, "Not Found", f"there is no certificate authority named {name!r} here")
        loaded = LoadedAuthority(
            row.name, row.role, row.parent, x509.load_der_x509_certificate(row.certificate), row.certificate, row.key_uri
        )
        with self._lock:
            if forgotten != self._forgotten:
                return loaded
            return self._authorities.setdefault(name, loaded)

    def authority_names(self) -> list[str]:
        with read_only(self.sessions) as session:
            return list(session.scalars(Authority.__table__.select().with_only_columns(Authority.name)))

    def forget_authorities(self) -> None:
        with self._lock:
            self._forgotten += 1
            self._authorities.clear()
