"""``hallmark init``: create what an instance needs, and leave alone what it has.

An instance folder holds the settings file, the SQLite database, a SoftHSM2 token
with its own ``softhsm2.conf``, and the token's PINs in an owner-only file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from core import audit, db
from core import settings as settings_module
from core.settings import PINS_FILE, SETTINGS_FILE, Settings
from hallmark import components
from hsm import softhsm


@dataclass
class InitReport:
    instance: Path
    steps: list[tuple[str, bool]] = field(default_factory=list)  # (what, changed)

    def did(self, what: str, changed: bool) -> None:
        self.steps.append((what, changed))

    @property
    def changed(self) -> bool:
        return any(changed for _, changed in self.steps)


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only, never briefly wider."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _uses_embedded_softhsm(settings: Settings) -> bool:
    return not settings.pkcs11_module or "softhsm" in Path(settings.pkcs11_module).name


def init_instance(instance: Path | None = None) -> InitReport:
    instance = (instance or settings_module.instance_path()).absolute()
    report = InitReport(instance)

    created = not instance.exists()
    instance.mkdir(parents=True, exist_ok=True, mode=0o700)
    report.did(f"instance folder {instance}", created)

    settings_file = instance / SETTINGS_FILE
    if not settings_file.exists():
        _write_private(
            settings_file,
            "# Hallmark instance settings. HALLMARK_<NAME> environment variables override these.\n"
            + settings_module.render_toml(
                {
                    "public_url": "http://127.0.0.1:8000",
                    "token_label": "hallmark",
                    # Random per instance: Flask session signing, and the keyed hash for identifier lookups.
                    "secret_key": secrets.token_urlsafe(32),
                    "lookup_key": secrets.token_urlsafe(32),
                }
            ),
        )
        report.did(f"settings file {settings_file}", True)
    else:
        report.did(f"settings file {settings_file}", False)

    settings = components.load_settings(instance)

    if _uses_embedded_softhsm(settings):
        pins_file = instance / PINS_FILE
        if not pins_file.exists():
            # Digits only: some PIN pads and middleware accept nothing else.
            pins = {"user_pin": f"{secrets.randbelow(10**12):012d}", "so_pin": f"{secrets.randbelow(10**12):012d}"}
            _write_private(pins_file, json.dumps(pins) + "\n")
            report.did(f"HSM PINs {pins_file} (owner-only)", True)
        else:
            report.did(f"HSM PINs {pins_file}", False)
        pins = json.loads(pins_file.read_text())

        conf = Path(settings.softhsm2_conf)
        if not conf.exists():
            softhsm.write_config(conf.parent)
            report.did(f"SoftHSM2 config {conf}", True)
        else:
            report.did(f"SoftHSM2 config {conf}", False)
        if settings.token_label not in softhsm.token_labels(conf):
            softhsm.init_token(conf, settings.token_label, pins["user_pin"], pins["so_pin"])
            report.did(f"SoftHSM2 token {settings.token_label!r}", True)
        else:
            report.did(f"SoftHSM2 token {settings.token_label!r}", False)

    engine = db.make_engine(settings.database_url)  # a new SQLite file is created owner-only
    try:
        before = _revision_or_none(engine)
        components.upgrade_database(engine)
        after = db.current_revisions(engine)
        report.did(f"database {settings.database_url_for_display()} at revision {', '.join(sorted(after))}", before != after)
        tightened = _owner_only_database(settings.database_url)
        if tightened:
            report.did(f"database files made owner-only: {', '.join(tightened)}", True)
        ca_report = _init_ca(settings, engine)
        for what, changed in ca_report.steps:
            report.did(what, changed)
        report.did("public client 'hallmark-key' (USB-key enrolment)", _init_key_client(settings, engine))
        report.did("public client 'hallmark-admin' (the staff console at /admin)", _init_console_client(settings, engine))
        if report.changed:
            with db.transaction(db.make_session_factory(engine)) as session:
                audit.record(
                    session,
                    actor="system:init",
                    action="instance.initialised",
                    target=str(instance),
                    details={"steps": [what for what, changed in report.steps if changed]},
                )
    finally:
        engine.dispose()
    return report


def _init_ca(settings: Settings, engine):
    from ca import hierarchy
    from ca.component import COMPONENT as CA

    with _services(settings, engine, [CA]) as services:
        return hierarchy.init_hierarchy(services[CA.name], actor="system:init")


def _init_key_client(settings: Settings, engine) -> bool:
    from idp.certlogin import enrolment
    from idp.component import COMPONENT as IDP

    with _services(settings, engine, [IDP]) as services:
        ctx = services[IDP.name]
        with db.transaction(ctx.sessions) as session:
            return enrolment.ensure_key_client(ctx, session, actor="system:init")


def _init_console_client(settings: Settings, engine) -> bool:
    from admin import login
    from admin.component import COMPONENT as ADMIN
    from ca.component import COMPONENT as CA
    from idp.component import COMPONENT as IDP

    with _services(settings, engine, [CA, IDP, ADMIN]) as services:
        ctx = services[ADMIN.name]
        with db.transaction(ctx.sessions) as session:
            return login.ensure_client(ctx, session, actor="system:init")


@contextlib.contextmanager
def _services(settings: Settings, engine, only):
    """The services of ``only`` on ``engine`` (left open) and a key manager of their own (closed after)."""
    from hallmark import wiring

    services = wiring.build(settings, only, engine=engine)
    try:
        yield services
    finally:
        services.keys.close()


def _owner_only_database(url: str) -> list[str]:
    """An instance made before init created its SQLite files 0600 may have them world-readable: take that away."""
    path = db.sqlite_file(url)
    if path is None:
        return []
    tightened = []
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            info = candidate.stat()
        except FileNotFoundError:
            continue
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            os.chmod(candidate, db.PRIVATE_FILE)
            tightened.append(candidate.name)
    return tightened


def _revision_or_none(engine) -> frozenset[str]:
    db.check(engine)
    return db.current_revisions(engine)


def ensure_initialised(settings: Settings) -> None:
    """Raise a ConfigError that says what to do when the instance is missing."""
    if not settings.settings_file.exists() and not os.environ.get("HALLMARK_DATABASE_URL"):
        raise settings_module.ConfigError(f"no instance at {settings.instance}; run 'hallmark init' first")
