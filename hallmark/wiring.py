"""Build the long-lived parts (database engine, key manager) from settings, once per process."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from ca.context import CAContext
from core import db
from core.settings import Settings
from hsm import PKCS11KeyManager
from hsm.softhsm import default_module
from idp.context import IdPContext


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    keys: PKCS11KeyManager
    ca: CAContext
    idp: IdPContext
    _closers: list = field(default_factory=list, repr=False)

    def on_close(self, stop) -> None:
        """Run ``stop()`` when the services close (background threads that use them)."""
        self._closers.append(stop)

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()
        self.keys.close()
        self.engine.dispose()


def module_path(settings: Settings) -> str:
    return settings.pkcs11_module or default_module()


def prepare_pkcs11_environment(settings: Settings) -> None:
    # SoftHSM2 reads SOFTHSM2_CONF when initialised; an explicit environment wins.
    if settings.softhsm2_conf and Path(settings.softhsm2_conf).exists():
        os.environ.setdefault("SOFTHSM2_CONF", settings.softhsm2_conf)


def key_manager(settings: Settings) -> PKCS11KeyManager:
    prepare_pkcs11_environment(settings)
    return PKCS11KeyManager(module_path(settings), settings.token_label, settings.user_pin)


_lock = threading.Lock()


def build(settings: Settings) -> Services:
    with _lock:
        engine = db.make_engine(settings.database_url)
        sessions = db.make_session_factory(engine)
        keys = key_manager(settings)
        return Services(settings, engine, sessions, keys, ca_context(settings, sessions, keys), idp_context(settings, sessions, keys))


def ca_context(settings: Settings, sessions, keys) -> CAContext:
    return CAContext(sessions=sessions, keys=keys, public_url=settings.public_url, lookup_key=lookup_key(settings))


def idp_context(settings: Settings, sessions, keys) -> IdPContext:
    from core.settings import ConfigError

    if not settings.secret_key:
        raise ConfigError("secret_key is not set; run 'hallmark init' or set HALLMARK_SECRET_KEY")
    from idp import logout

    ctx = IdPContext(
        sessions=sessions,
        keys=keys,
        issuer=settings.public_url.rstrip("/"),
        lookup_key=lookup_key(settings),
        secret_key=settings.secret_key.encode(),
        registry_url=settings.registry_url,
    )
    logout.install(ctx)  # logout notices go out as soon as the session's end commits
    return ctx


def lookup_key(settings: Settings) -> bytes:
    from core.settings import ConfigError

    if not settings.lookup_key:
        raise ConfigError("lookup_key is not set; run 'hallmark init' or set HALLMARK_LOOKUP_KEY")
    return settings.lookup_key.encode()
