"""Settings: the shared ones here, each package's own in its section.

Order of precedence: ``HALLMARK_*`` environment variables, then the instance's
``hallmark.toml``, then the defaults. ``HALLMARK_INSTANCE`` picks the instance
folder (default ``./instance``).

:class:`Settings` holds what every package shares (database, HSM, public URL,
keys, limits). A package declares its own settings as a frozen dataclass, its
*section* (``ca.settings.CASettings``, ...), named by its component; the
composition root hands the sections to :func:`load`, which reads their fields
from the same flat ``hallmark.toml`` and ``HALLMARK_<FIELD>`` variables, checks
them, and keeps them in ``settings.section(name)``. A field name belongs to one
section only. A section may check itself in ``__post_init__`` (raise
:class:`ConfigError`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

SETTINGS_FILE = "hallmark.toml"
PINS_FILE = "hsm-pins.json"
# Settings that were renamed: an instance written before keeps loading, with a warning, instead
# of failing on an "unknown setting". The old name's value is taken unless the new one is set too.
RENAMED = {
    "logout_retry_seconds": "outbox_seconds",  # back-channel logout moved onto core's outbox
}


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it."""


@dataclass(frozen=True)
class Settings:
    instance: Path
    database_url: str = ""
    pkcs11_module: str = ""
    token_label: str = "hallmark"
    # Where the user PIN comes from: "file:PATH" (JSON with "user_pin") or "env:VARIABLE".
    pin_source: str = ""
    softhsm2_conf: str = ""
    public_url: str = "http://127.0.0.1:8000"
    bind: str = "127.0.0.1:8000"
    workers: int = 2
    secret_key: str = field(default="", repr=False)
    lookup_key: str = field(default="", repr=False)
    log_level: str = "INFO"
    max_request_bytes: int = 10 * 1024 * 1024
    # Reverse proxies (addresses or CIDR networks, comma or space separated) whose X-Forwarded-For and
    # X-Forwarded-Proto are believed (core.web.proxies), and whose forwarded client certificates count (idp);
    # empty: no forwarded header is believed.
    trusted_proxies: str = ""
    sections: Mapping[str, object] = field(default_factory=dict, hash=False)  # component name -> its settings section

    def lookup_key_bytes(self) -> bytes:
        """The key of the identifier lookup hash (ConfigError when it is not set)."""
        if not self.lookup_key:
            raise ConfigError("lookup_key is not set; run 'hallmark init' or set HALLMARK_LOOKUP_KEY")
        return self.lookup_key.encode()

    def secret_key_bytes(self) -> bytes:
        """The key of client-secret hashes, CSRF tokens and cookies (ConfigError when it is not set)."""
        if not self.secret_key:
            raise ConfigError("secret_key is not set; run 'hallmark init' or set HALLMARK_SECRET_KEY")
        return self.secret_key.encode()

    def section(self, name: str):
        """The settings section of the component ``name`` (ConfigError if it was not loaded)."""
        try:
            return self.sections[name]
        except KeyError:
            raise ConfigError(f"no settings section {name!r} was loaded; load settings through the component list") from None

    def __getattr__(self, name: str):
        # A package's own setting read by its flat name (settings.cert_agent_port), as before sections.
        for section in self.__dict__.get("sections", {}).values():
            if name in _field_names(type(section)):
                return getattr(section, name)
        raise AttributeError(f"no setting named {name!r}")

    @property
    def settings_file(self) -> Path:
        return self.instance / SETTINGS_FILE

    def user_pin(self) -> str:
        """Read the user PIN from its source, now (never cached in settings)."""
        kind, _, where = self.pin_source.partition(":")
        if kind == "env":
            value = os.environ.get(where)
            if not value:
                raise ConfigError(f"the PIN source names environment variable {where}, which is not set")
            return value
        if kind == "file":
            try:
                return json.loads(Path(where).read_text())["user_pin"]
            except FileNotFoundError:
                raise ConfigError(f"the PIN file {where} does not exist; run 'hallmark init'") from None
            except (KeyError, ValueError):
                raise ConfigError(f"the PIN file {where} is not JSON with a 'user_pin' entry") from None
            except PermissionError:
                raise ConfigError(f"cannot read the PIN file {where}: permission denied") from None
        raise ConfigError(f"HALLMARK_PIN_SOURCE must be 'file:PATH' or 'env:VARIABLE', not {self.pin_source!r}")

    def database_url_for_display(self) -> str:
        return mask_url_password(self.database_url)


def mask_url_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def instance_path() -> Path:
    return Path(os.environ.get("HALLMARK_INSTANCE", "instance")).absolute()


def _field_names(section: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(section))


def _coerce(values: dict[str, object], types: dict[str, object]) -> None:
    """Numbers from text (environment variables are text); lists of text as one space-separated string."""
    for name, kind in types.items():
        if name not in values:
            continue
        if kind in ("int", int) and not isinstance(values[name], int):
            try:
                values[name] = int(values[name])
            except ValueError:
                raise ConfigError(f"{name} must be a whole number, not {values[name]!r}") from None
        elif kind in ("float", float) and not isinstance(values[name], (int, float)):
            try:
                values[name] = float(values[name])
            except (TypeError, ValueError):
                raise ConfigError(f"{name} must be a number, not {values[name]!r}") from None
        elif kind in ("str", str) and isinstance(values[name], list):  # hallmark.toml may list them
            values[name] = " ".join(str(v) for v in values[name])


def load(instance: Path | None = None, environ: dict[str, str] | None = None, *, sections: Mapping[str, type] | None = None) -> Settings:
    """Settings for ``instance`` (default: ``HALLMARK_INSTANCE``), environment winning.

    ``sections`` maps a component's name to its settings section (a frozen
    dataclass); the composition root passes them all (``hallmark.components.load_settings``).
    """
    sections = dict(sections or {})
    environ = os.environ if environ is None else environ
    instance = (instance or Path(environ.get("HALLMARK_INSTANCE", "instance"))).absolute()
    values: dict[str, object] = {}
    settings_file = instance / SETTINGS_FILE
    if settings_file.exists():
        try:
            values.update(tomllib.loads(settings_file.read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{settings_file} is not valid TOML: {exc}") from None
    _rename(values, environ, settings_file)
    shared = {f.name: f.type for f in fields(Settings) if f.name not in ("instance", "sections")}
    owner: dict[str, str] = dict.fromkeys(shared, "")
    for section_name, section in sections.items():
        for name in _field_names(section):
            if name in owner:
                raise ConfigError(
                    f"setting {name!r} of section {section_name!r} is already a setting of {owner[name] or 'the shared settings'}"
                )
            owner[name] = section_name
    unknown = set(values) - set(owner)
    if unknown:
        raise ConfigError(f"{settings_file}: unknown setting(s) {', '.join(sorted(unknown))}")
    for name in owner:
        env_value = environ.get(f"HALLMARK_{name.upper()}")
        if env_value is not None:
            values[name] = env_value
    _coerce(values, shared)
    defaults = embedded_defaults(instance)
    for name, value in defaults.items():
        values.setdefault(name, value)
    loaded_sections = {}
    for section_name, section in sections.items():
        own = {f.name: f.type for f in fields(section)}
        section_values = {name: values.pop(name) for name in list(values) if name in own}
        _coerce(section_values, own)
        try:
            loaded_sections[section_name] = section(**section_values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"settings of {section_name}: {exc}") from None
    settings = Settings(instance=instance, sections=loaded_sections, **values)
    if not settings.public_url.startswith(("http://", "https://")):
        raise ConfigError(f"public_url must be an http(s) URL, not {settings.public_url!r}")
    for proxy in settings.trusted_proxies.replace(",", " ").split():
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"trusted_proxies: {proxy!r} is not an IP address or network") from None
    return settings


def _rename(values: dict[str, object], environ: Mapping[str, str], settings_file: Path) -> None:
    """Move renamed settings (:data:`RENAMED`) to their new names, with a warning.

    Precedence as everywhere: the environment over the file, and the new name over the old.
    """
    import logging

    log = logging.getLogger("hallmark.settings")
    for old, new in RENAMED.items():
        old_env, new_env = f"HALLMARK_{old.upper()}", f"HALLMARK_{new.upper()}"
        from_file = values.pop(old, None)
        if from_file is not None:
            log.warning("%s: setting %s is now called %s; please rename it", settings_file, old, new)
        if old_env in environ:
            log.warning("environment variable %s is now called %s; please rename it", old_env, new_env)
            if new_env not in environ:
                values[new] = environ[old_env]
        elif from_file is not None and new not in values:
            values[new] = from_file


def embedded_defaults(instance: Path) -> dict[str, str]:
    """Defaults that depend on where the instance lives (SQLite and SoftHSM2 inside it).

    An empty ``pkcs11_module`` means "the SoftHSM2 module of this machine"; the
    composition root resolves it, since ``core`` knows nothing of ``hsm``.
    """
    return {
        "database_url": f"sqlite:///{instance / 'hallmark.db'}",
        "pin_source": f"file:{instance / PINS_FILE}",
        "softhsm2_conf": str(instance / "softhsm" / "softhsm2.conf"),
    }


def render_toml(values: dict[str, object]) -> str:
    """A minimal TOML writer for flat string/int tables (tomllib only reads)."""
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f"{key} = {json.dumps(str(value), ensure_ascii=False)}")
    return "\n".join(lines) + "\n"
