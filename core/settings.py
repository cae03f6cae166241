"""All settings in one place.

Order of precedence: ``HALLMARK_*`` environment variables, then the instance's
``hallmark.toml``, then the defaults below. ``HALLMARK_INSTANCE`` picks the
instance folder (default ``./instance``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

SETTINGS_FILE = "hallmark.toml"
PINS_FILE = "hsm-pins.json"


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
    ca_upkeep_seconds: int = 600  # CRL publication and OCSP re-signing in the background; 0 = off
    logout_retry_seconds: int = 15  # how often undelivered back-channel logout notices are retried; 0 = off
    registry_url: str = ""  # population registry HTTP adapter; empty = the embedded table
    log_level: str = "INFO"
    max_request_bytes: int = 10 * 1024 * 1024
    cert_agent_port: int = 17443  # port of the hallmark-key agent on users' PCs (127.0.0.1) that login pages call
    client_cert_header: str = "X-SSL-Client-Cert"  # where a trusted proxy forwards a verified client certificate
    trusted_proxies: str = ""  # addresses/networks whose forwarded client certificates count; empty = that path is off

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


def load(instance: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Settings for ``instance`` (default: ``HALLMARK_INSTANCE``), environment winning."""
    environ = os.environ if environ is None else environ
    instance = (instance or Path(environ.get("HALLMARK_INSTANCE", "instance"))).absolute()
    values: dict[str, object] = {}
    settings_file = instance / SETTINGS_FILE
    if settings_file.exists():
        try:
            values.update(tomllib.loads(settings_file.read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{settings_file} is not valid TOML: {exc}") from None
    known = {f.name: f for f in fields(Settings) if f.name != "instance"}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"{settings_file}: unknown setting(s) {', '.join(sorted(unknown))}")
    for name in known:
        env_value = environ.get(f"HALLMARK_{name.upper()}")
        if env_value is not None:
            values[name] = env_value
    for whole in (f.name for f in fields(Settings) if f.type in ("int", int)):
        if whole in values and not isinstance(values[whole], int):
            try:
                values[whole] = int(values[whole])
            except ValueError:
                raise ConfigError(f"{whole} must be a whole number, not {values[whole]!r}") from None
    if "max_request_bytes" in values:
        values["max_request_bytes"] = int(values["max_request_bytes"])
    if isinstance(values.get("trusted_proxies"), list):  # hallmark.toml may list them
        values["trusted_proxies"] = " ".join(str(v) for v in values["trusted_proxies"])
    defaults = embedded_defaults(instance)
    for name, value in defaults.items():
        values.setdefault(name, value)
    settings = Settings(instance=instance, **values)
    if not settings.public_url.startswith(("http://", "https://")):
        raise ConfigError(f"public_url must be an http(s) URL, not {settings.public_url!r}")
    if not 0 < settings.cert_agent_port < 65536:
        raise ConfigError(f"cert_agent_port must be a port number, not {settings.cert_agent_port}")
    for proxy in settings.trusted_proxies.replace(",", " ").split():
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"trusted_proxies: {proxy!r} is not an IP address or network") from None
    return settings


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
