"""A demo USB key: a SoftHSM2 token in a folder of its own, with an ``agent.toml`` that
points ``hallmark-key`` at it.

For ``make run`` (hallmark.demo) and for tests: certificate login without hardware. It
lives on the server side because it provisions a SoftHSM2 token (``hsm.softhsm``), which
``hallmark-key`` on a user's PC never does; it only writes the agent's settings file. The
PIN is random and kept in ``agent.toml`` (owner-only), which a real key's configuration
never holds: there the agent asks for the PIN when it starts.
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from hsm import softhsm

DEMO_LABEL = "demo-usb-key"
AGENT_PORT = 17443  # hallmark-key's own default port, the one login pages call (core.settings cert_agent_port)


@dataclass(frozen=True)
class DemoToken:
    directory: Path
    softhsm2_conf: Path
    token: str
    agent_config: Path
    created: bool


def _toml_value(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string


def write_agent_config(path: Path, settings: dict) -> None:
    text = "# hallmark-key settings for the demo USB key (a SoftHSM2 token). The PIN is here for the demo only.\n"
    text += "".join(f"{key} = {_toml_value(value)}\n" for key, value in settings.items())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def create_demo_token(directory: Path, *, label: str = DEMO_LABEL, allowed_origins: list[str] = (), port: int = AGENT_PORT) -> DemoToken:
    """Create (or keep) the token and its ``agent.toml``; origins given are added to those already allowed."""
    directory = directory.absolute()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    agent_config = directory / "agent.toml"
    existing = tomllib.loads(agent_config.read_text(encoding="utf-8")) if agent_config.exists() else {}
    conf = directory / "softhsm2.conf"
    if not conf.exists():
        softhsm.write_config(directory)
    created = label not in softhsm.token_labels(conf)
    pin = existing.get("pin") if not created and existing.get("pin") else f"{secrets.randbelow(10**8):08d}"
    if created:
        softhsm.init_token(conf, label, pin, secrets.token_hex(8))
    # hallmark-key checks and normalises these when it reads agent.toml; here only the spelling is evened out.
    origins = list(dict.fromkeys([*existing.get("allowed_origins", []), *(o.strip().rstrip("/").lower() for o in allowed_origins)]))
    write_agent_config(
        agent_config,
        {
            "module": existing.get("module") or softhsm.default_module(),
            "token": label,
            "softhsm2_conf": str(conf),
            "pin": pin,
            "port": existing.get("port", port),
            "allowed_origins": origins,
        },
    )
    return DemoToken(directory, conf, label, agent_config, created)
