"""Build the long-lived parts (database engine, key manager, each component's service) from settings, once per process."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

from core import authorization_details, db
from core.component import Component, Services
from core.settings import Settings
from hallmark.components import COMPONENTS
from hsm import PKCS11KeyManager
from hsm.softhsm import default_module

__all__ = ["Services", "build", "key_manager", "module_path", "prepare_pkcs11_environment"]


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


def build(settings: Settings, components: Iterable[Component] = COMPONENTS, *, engine=None, keys=None) -> Services:
    """The shared parts, then each component's service in list order, then their event subscriptions.

    ``engine`` and ``keys``, when given, are used instead of new ones (and closed with the services).
    """
    with _lock:
        engine = engine if engine is not None else db.make_engine(settings.database_url)
        keys = keys if keys is not None else key_manager(settings)
        services = Services(settings=settings, engine=engine, sessions=db.make_session_factory(engine), keys=keys)
        try:
            components = tuple(components)
            services.detail_types.update(
                authorization_details.registry(t for c in components if c.authorization_details for t in c.authorization_details())
            )
            for component in components:
                if component.services is not None:
                    services.add(component.name, component.services(services))
            for component in components:
                if component.subscribe is not None:
                    component.subscribe(services.hooks, services.by_name.get(component.name))
        except BaseException:
            services.close()
            raise
        return services
