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
    _signers: dict = field(default_factory=dict, repr=False)
    _authorities: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def url(self, path: str) -> str:
        return self.public_url.rstrip("/") + path

    def signer(self, key_uri: str):
        signer = self._signers.get(key_uri)
        if signer is None:
            signer = self._signers[key_uri] = self.keys.signer(key_uri)
        return signer

    def authority(self, name: str, session: Session | None = None) -> LoadedAuthority:
        loaded = self._authorities.get(name)
        if loaded is not None:
            return loaded
        with self._lock:
            if name in self._authorities:
                return self._authorities[name]
            if session is None:
                with self.sessions() as own:
                    row = own.get(Authority, name)
            else:
                row = session.get(Authority, name)
            if row is None:
                raise Problem(404, "Not Found", f"there is no certificate authority named {name!r} here")
            loaded = LoadedAuthority(
                row.name, row.role, row.parent, x509.load_der_x509_certificate(row.certificate), row.certificate, row.key_uri
            )
            self._authorities[name] = loaded
            return loaded

    def authority_names(self) -> list[str]:
        with self.sessions() as session:
            return list(session.scalars(Authority.__table__.select().with_only_columns(Authority.name)))

    def forget_authorities(self) -> None:
        with self._lock:
            self._authorities.clear()
