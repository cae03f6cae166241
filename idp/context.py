"""What every identity-provider service needs at hand, built once per process."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from hsm import KeyManager
from idp.settings import IdPSettings

NAME = "idp"  # the identity provider component's name: the key of its service (core.component.service) and its settings section


def current(app=None) -> IdPContext:
    """The identity provider's service on the current Flask app (put there by the composition root)."""
    from core import component

    return component.service(NAME, app)


@dataclass
class IdPContext:
    sessions: sessionmaker[Session]
    keys: KeyManager
    issuer: str  # the public base URL; "iss" of every token
    lookup_key: bytes  # keys the hash of resident IDs
    secret_key: bytes  # keys client-secret hashes and CSRF tokens
    registry_url: str = ""  # population registry HTTP adapter; empty = the embedded table
    settings: IdPSettings = field(default_factory=IdPSettings)  # the section as loaded (the registry's credentials, ...)
    # This instance's JSON APIs as OAuth resources (RFC 8707): resource URI -> the scopes it serves
    # (core.bearer.catalogue), handed in at start-up; tokens are issued for them (idp.oidc.resources).
    resources: dict[str, frozenset[str]] = field(default_factory=dict)
    # RFC 9396 authorization_details types by name (core.authorization_details.DetailType), every component's
    # (core.component.Services.detail_types); the authorization endpoint accepts only these (idp.oidc.authorization_details).
    detail_types: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict, repr=False)  # per-process caches owned by service modules

    def url(self, path: str) -> str:
        return self.issuer.rstrip("/") + path
