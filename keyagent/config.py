"""``hallmark-key`` settings: one TOML file, then environment variables, then options.

The file is ``~/.config/hallmark-key/agent.toml`` (``$XDG_CONFIG_HOME`` respected),
or the one named by ``--config`` / ``HALLMARK_KEY_CONFIG``. Every key is optional::

    module = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"   # the USB key's PKCS#11 module
    token = "my key"                                      # token label, when several are present
    idp = "https://id.example.gov.cn"                      # the Hallmark server, for enrolment
    port = 17443                                           # the local agent's port on 127.0.0.1
    allowed_origins = ["https://hall.example.gov.cn"]      # pages that may ask the agent to sign
    softhsm2_conf = "/path/softhsm2.conf"                  # SoftHSM2 only: which token directory
    pin = "..."                                            # demos and tests only; a prompt otherwise
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_PORT = 17443
DEFAULT_IDP = "http://127.0.0.1:8000"
KNOWN_KEYS = frozenset({"module", "token", "idp", "port", "allowed_origins", "softhsm2_conf", "pin"})
_ORIGIN = re.compile(r"^https?://[a-z0-9.\-\[\]:]+$")


class ConfigError(ValueError):
    pass


# Where a desktop's PKCS#11 modules are found when none is configured, in order: SoftHSM2
# (the demo key, and a token for trying things out), then OpenSC (most smart cards and
# USB keys). A vendor's own middleware is named with `module = ...` or --module.
MODULE_NAMES = ("softhsm/libsofthsm2.so", "libsofthsm2.so", "opensc-pkcs11.so", "pkcs11/opensc-pkcs11.so")
LIBRARY_DIRS = ("/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/lib", "/usr/lib64", "/opt/homebrew/lib")


def default_module() -> str:
    """The first PKCS#11 module found on this machine; "" when there is none."""
    for name in MODULE_NAMES:
        for directory in LIBRARY_DIRS:
            candidate = Path(directory) / name
            if candidate.is_file():
                return str(candidate)
    return ""


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hallmark-key" / "agent.toml"


def normalise_origin(text: str) -> str:
    """``scheme://host[:port]`` in lower case, default ports dropped; ConfigError for anything else."""
    if not isinstance(text, str) or text.strip() in ("*", "null", ""):
        raise ConfigError(f"{text!r} is not an origin; list each hall origin (https://host[:port]); no wildcards")
    value = text.strip().lower().rstrip("/")
    if not _ORIGIN.match(value):
        raise ConfigError(f"{text!r} is not an origin of the form https://host[:port] (no path, no wildcard)")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{text!r} has a bad port") from None
    if not parts.hostname:
        raise ConfigError(f"{text!r} has no host")
    if (parts.scheme, port) in (("https", 443), ("http", 80)):
        value = f"{parts.scheme}://{parts.netloc.rsplit(':', 1)[0]}"
    return value


@dataclass
class KeyConfig:
    path: Path | None = None
    module: str = ""
    token: str | None = None
    idp: str = DEFAULT_IDP
    port: int = DEFAULT_PORT
    allowed_origins: list[str] = field(default_factory=list)
    softhsm2_conf: str | None = None
    pin: str | None = field(default=None, repr=False)

    @property
    def module_path(self) -> str:
        return self.module or default_module()


def load(path: str | Path | None = None, environ: dict | None = None) -> KeyConfig:
    """Settings from the file (if any), then HALLMARK_KEY_* variables."""
    env = os.environ if environ is None else environ
    explicit = path or env.get("HALLMARK_KEY_CONFIG")
    file = Path(explicit) if explicit else default_path()
    data: dict = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    elif explicit:
        raise ConfigError(f"{file}: no such configuration file")
    unknown = set(data) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{file}: unknown setting(s) {', '.join(sorted(unknown))}")
    config = KeyConfig(path=file if file.exists() else None)
    for key in ("module", "token", "idp", "softhsm2_conf", "pin"):
        if key in data:
            if not isinstance(data[key], str):
                raise ConfigError(f"{file}: {key} must be a string")
            setattr(config, key, data[key])
    if "port" in data:
        config.port = _port(data["port"], str(file))
    if "allowed_origins" in data:
        origins = data["allowed_origins"]
        if not isinstance(origins, list):
            raise ConfigError(f"{file}: allowed_origins must be a list of origins")
        config.allowed_origins = [normalise_origin(o) for o in origins]
    config.module = env.get("HALLMARK_KEY_MODULE") or config.module
    config.token = env.get("HALLMARK_KEY_TOKEN") or config.token
    config.idp = env.get("HALLMARK_KEY_IDP") or config.idp
    if env.get("HALLMARK_KEY_PIN"):
        config.pin = env["HALLMARK_KEY_PIN"]
    return config


def _port(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{where}: port must be a number from 1 to 65535")
    return value
