"""What every staff-console service needs: the database, the services below it, the settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from admin.settings import AdminSettings

NAME = "admin"  # the component's name: the key of its service and its settings section
CLIENT_ID = "hallmark-admin"  # the console's own registration at the identity provider
CALLBACK_PATH = "/admin/callback"


def current(app=None) -> AdminContext:
    """The console's service on the current Flask app (put there by the composition root)."""
    from core import component

    return component.service(NAME, app)


@dataclass
class AdminContext:
    sessions: Any  # sessionmaker of the shared database
    idp: Any  # idp.context.IdPContext: accounts are looked up, the console's client registered
    ca: Any  # ca.context.CAContext: seals (signing.seals works on it)
    public_url: str
    settings: AdminSettings = field(default_factory=AdminSettings)
    licences: Any = None  # licenses.context.LicencesContext: the licence officer's section, standing grants
    cache: dict = field(default_factory=dict, repr=False)  # per-process caches (the IdP's metadata and keys)

    @property
    def issuer(self) -> str:
        return self.public_url.rstrip("/")

    @property
    def redirect_uri(self) -> str:
        return self.issuer + CALLBACK_PATH

    @property
    def idp_url(self) -> str:
        """The base the console calls the identity provider at, server to server."""
        return (self.settings.admin_idp_url or self.public_url).rstrip("/")
